"""Many simulations at once: a grid of targets x cascades x models x lengths to rows (CSV), and the
traffic-versus-buffer curve of one design, whose steps show the cascade's passes."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from einsim.errors import ConfigError
from einsim.simulator.mapping import load_mapping
from einsim.simulator.simulate import resolve_cascade, resolve_target, simulate
from einsim.problem import Problem


MAX_SWEEP_POINTS = 10_000  # capacities in one buffer sweep: each is a full mapping search
MAX_GRID_POINTS = 100_000  # designs in one `einsim sweep` grid (a few ms each)


def grid(targets: Sequence[str], cascades: Sequence[str], models: Sequence[str], seq_lens: Sequence[int],
         mode: str = "prefill", mapping: Any = None, progress: bool = True, errors: str = "row") -> list[dict[str, Any]]:
    """Simulate every combination; a combination the model cannot run (a cascade the GPU model
    has no kernel style for, a mapping a target rejects) gives a row with its `error` when
    errors="row", or raises when errors="raise"."""
    from einsim.errors import EinsimError
    from einsim.simulator.models import load_model

    # A misspelt name or a broken file is the user's input error, not a combination the model
    # cannot run: load everything once, up front, so it fails before the grid (and is loaded once).
    loaded_targets = {name: resolve_target(name) for name in targets}
    loaded_cascades = {name: resolve_cascade(name) for name in cascades}
    loaded_models = {name: load_model(name) for name in models}
    mapping = load_mapping(mapping)
    points = len(targets) * len(cascades) * len(models) * len(seq_lens)
    if points > MAX_GRID_POINTS:
        raise ConfigError(f"sweep: {len(targets)} targets x {len(cascades)} cascades x {len(models)} models x "
                          f"{len(seq_lens)} lengths = {points} designs, more than {MAX_GRID_POINTS}; split the sweep")
    combos: Iterable = list(itertools.product(targets, cascades, models, seq_lens))
    if progress:
        from tqdm import tqdm

        combos = tqdm(combos, desc="einsim sweep", unit="design")
    rows = []
    for target, cascade, model, seq_len in combos:
        problem = loaded_models[model].problem(seq_len, mode)
        try:
            estimate = simulate(loaded_cascades[cascade], problem, loaded_targets[target], mapping)
        except EinsimError as error:
            if errors == "raise":
                raise
            rows.append({"model": model, "seq_len": seq_len, "cascade": cascade, "target": target, "error": str(error)})
            continue
        rows.append(estimate.row(model=model, seq_len=seq_len))
    return rows


def buffer_capacities(low: float = 16 * 2**10, high: float = 4 * 2**30, per_octave: int = 2) -> np.ndarray:
    """Geometric capacities from `low` to `high` bytes, `per_octave` points per doubling; more
    than MAX_SWEEP_POINTS is a ConfigError (before anything is simulated)."""
    if not (0 < low <= high and np.isfinite(high)) or per_octave < 1:
        raise ConfigError(f"buffer sweep: expected 0 < low <= high and at least one point per octave, got "
                          f"{low!r}..{high!r} bytes, {per_octave!r} per octave")
    count = int(round(np.log2(high / low) * per_octave)) + 1
    if count > MAX_SWEEP_POINTS:
        raise ConfigError(f"buffer sweep: {count} capacities ({per_octave} per octave from {low:.4g} to {high:.4g} "
                          f"bytes) is more than {MAX_SWEEP_POINTS}; use fewer per octave or a narrower range")
    return low * 2.0 ** (np.arange(count) / per_octave)


def buffer_sweep(cascade: Any, problem: Problem, target: Any, mapping: Any = None,
                 capacities: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Traffic, latency and energy of the design at each global-buffer capacity, its mapping
    re-chosen at each (docs/simulator.md §5.5). Spatial targets only."""
    from einsim.simulator.spatial import compile_design

    target = resolve_target(target)
    if target.kind != "spatial":
        raise ConfigError(f"{target.name}: a traffic-versus-buffer sweep varies a spatial design's global buffer, "
                          "and a GPU's shared memory is fixed by its architecture; give a spatial target "
                          "(einsim targets list: kind spatial)")
    design = compile_design(resolve_cascade(cascade), problem, target, load_mapping(mapping))
    caps = np.asarray(buffer_capacities() if capacities is None else capacities, dtype=float)
    choices = design.choose(caps)
    result = design.evaluate_choice(choices, caps)
    compulsory = compulsory_traffic_bytes(design)
    rows = []
    for i, cap in enumerate(caps):
        if not bool(result["feasible"][i]):
            # not even one query row's per-query state and the streamed tiles fit
            rows.append({"buffer_bytes": float(cap), "traffic_bytes": float("nan"), "traffic_over_compulsory": float("nan"),
                         "latency_s": float("nan"), "energy_j": float("nan"), "fits": False, "spill_fraction": float("nan"),
                         "query_block": "", "spill": "does not fit"})
            continue
        rows.append({
            "buffer_bytes": float(cap),
            "traffic_bytes": float(result["traffic_bytes"][i]),
            "traffic_over_compulsory": float(result["traffic_bytes"][i]) / compulsory,
            "latency_s": float(result["latency_s"][i]),
            "energy_j": float(result["energy_j"][i]),
            "fits": bool(result["fits"][i]),
            "spill_fraction": float(result["spill_fraction"][i]),
            "query_block": "/".join(str(int(np.atleast_1d(c["query_block"])[i])) for c in choices),
            "spill": "/".join(str(np.atleast_1d(c["spill"])[i]) for c in choices),
        })
    return rows


def compulsory_traffic_bytes(design) -> float:
    """Every input read once and every output written once (FuseMax §V: 4·B·H·M·E words for
    self-attention with E = F)."""
    tensors = design.tensors
    cascade = design.cascade
    total = 0.0
    for name in cascade.inputs:
        info = tensors[name]
        total += info.elements * info.kv_scale
    for name in cascade.outputs:
        total += tensors[name].elements
    return total * design.word
