"""The simulator's front door: resolve names to a cascade, a target and a mapping, then hand them to
the GPU model or the spatial-accelerator model, which both return an Estimate."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from einsim.einsum_cascades.ir import Cascade
from einsim.einsum_cascades.loader import load_cascade
from einsim.einsum_cascades.passes import analyze_passes
from einsim.errors import ConfigError, ShapeError, SpecError, brief
from einsim.files import is_file
from einsim.simulator.binding import window_binding
from einsim.simulator.estimate import Estimate
from einsim.simulator.mapping import Mapping, load_mapping
from einsim.problem import Problem
from einsim.targets.loader import load_target
from einsim.targets.spec import Target
from einsim.units import format_bytes


def simulate(cascade: Cascade | str | Path, problem: Problem, target: Any, mapping: Any = None, *,
             strict: bool = False) -> Estimate:
    """Estimate `cascade` (a Cascade, a library name or a YAML path) running `problem` on `target`
    (a Target, a preset name or a YAML path) under `mapping` (a Mapping, a dict, a YAML path, or
    None for the design's defaults). docs/simulator.md gives every formula.

    `strict`: a design that cannot run at all raises ConfigError naming the fix instead of
    returning an estimate that says so (see check_runs); a spatial design whose live state
    merely spills still runs (with more traffic) and is returned."""
    if not isinstance(problem, Problem):
        raise ShapeError(f"simulate: problem must be an einsim.Problem (Problem(batch=..., q_heads=..., ...), "
                         f"parse_shape('1,32,4k,128') or a model's .problem(seq_len)), got {brief(problem)}")
    if mapping is not None and not isinstance(mapping, (str, Path, dict)) and not hasattr(mapping, "__dataclass_fields__"):
        raise ConfigError(f"simulate: mapping must be a Mapping, a dict, a YAML path or None, got {brief(mapping)}")
    cascade = resolve_cascade(cascade)
    target = resolve_target(target)
    check_fixed_ranks(cascade, problem)
    window_binding(cascade, problem)
    if target.kind == "gpu":
        from einsim.simulator.gpu_cost.estimate import simulate_gpu

        estimate = simulate_gpu(cascade, problem, target, mapping)
    else:
        from einsim.simulator.spatial import simulate_spatial

        estimate = simulate_spatial(cascade, problem, target, load_mapping(mapping))
    estimate = replace(estimate, **cascade_facts(cascade, problem, estimate.passes))
    overridden = mask_and_filters_note(cascade, problem)
    if overridden:
        estimate = replace(estimate, notes=tuple(estimate.notes) + (overridden,))
    if strict:
        check_runs(estimate, target.kind, mapping)
    return estimate


_CAUSAL_TERM = "m<=p+M-P"


def mask_and_filters_note(cascade: Cascade, problem: Problem) -> str | None:
    """Both models price the problem's causal mask and-ed with the cascade's own filters (the
    workload's mask and the cascade's are both honoured). When the filters do not contain the
    causal term themselves (prefix-LM's `m < prefix or m <= p + M - P`), the and removes points
    they keep (the prefix past the diagonal): say so, and how to price the filters alone."""
    filters = tuple(cascade.filters)
    if not problem.causal or not filters:
        return None
    terms = {str(term).replace(" ", "") for f in filters for term in f.conditions}
    if _CAUSAL_TERM in terms or {f.text.replace(" ", "") for f in filters} <= {_CAUSAL_TERM}:
        return None
    text = " and ".join(f.text for f in filters)
    return (f"the problem's causal mask is and-ed with {cascade.name}'s filter ({text}): points the filter keeps "
            "past the diagonal are masked too; without --causal (causal=False) the filter alone is the mask")


def cascade_facts(cascade: Cascade, problem: Problem, passes: int) -> dict[str, Any]:
    """What an Estimate records about its cascade for the report: attention or not, whether the
    state live between several passes over M grows with M, every rank's simulated size."""
    bound = cascade.bind(problem.rank_sizes())
    grows = _live_state_grows(cascade) if passes > 1 and "M" in cascade.ranks else None
    return {"attention": {"M", "P"} <= set(cascade.ranks), "live_state_grows": grows,
            "rank_sizes": {rank: bound[rank] for rank in cascade.ranks},
            "visible_pairs": filtered_pairs(cascade, problem)}


@lru_cache(maxsize=256)
def filtered_pairs(cascade: Cascade, problem: Problem) -> float | None:
    """(query, key) pairs the problem's mask and-ed with the cascade-wide filters keep, over
    every batch element and head, exactly (einsum_cascades.tiles; the filters' tensors from
    problem.filter_inputs, or without them the terms that read none); None for a cascade
    without filters or without both attention ranks, and for ragged caches (kv_lens)."""
    from einsim.einsum_cascades.filter_values import filter_values
    from einsim.einsum_cascades.tiles import classify_tiles

    if not cascade.filters or not {"M", "P"} <= set(cascade.ranks) or problem.kv_lens is not None:
        return None
    symbols = cascade.symbols or {}
    sizes = {k: v for k, v in problem.rank_sizes().items() if k in cascade.ranks or k in symbols}
    sizes.update(window_binding(cascade, problem))
    bound = cascade.bind(sizes)
    reads = any(f.tensors for f in cascade.filters)
    values = filter_values(cascade, bound, problem.filter_inputs, causal=problem.causal) if (
        reads and problem.filter_inputs is not None) else None
    found = classify_tiles(cascade, bound, 128, 128, values, problem=problem, drop_reads=reads and values is None)
    copies = math.prod(found.state.shape[:-2])
    return float(found.visible_pairs) * problem.batch * problem.q_heads / copies


@lru_cache(maxsize=64)
def _live_state_grows(cascade: Cascade) -> bool:
    return any(live.grows_with_rank for live in analyze_passes(cascade, "M").live_across_passes)


def check_runs(estimate: Estimate, kind: str, mapping: Any = None) -> None:
    """ConfigError for a design that cannot run at all, naming the fix: a spatial design whose
    buffer cannot hold even one query row's state (its latency is undefined), or a GPU kernel
    whose tiles overflow shared memory or registers (it would not launch)."""
    where = f"{mapping}: " if isinstance(mapping, (str, Path)) else ""
    what = f"{where}{estimate.cascade} on {estimate.target}"
    if kind == "spatial":
        if not math.isfinite(estimate.latency_s):
            raise ConfigError(f"{what}: even one query row's resident state does not fit in "
                              f"{format_bytes(estimate.buffer_capacity_bytes)}; choose smaller "
                              "key_tile/query_tile/query_block in the mapping, or a target with a larger buffer")
        return
    if not estimate.fits or not math.isfinite(estimate.latency_s):
        need = next((n for n in estimate.notes if n.startswith("does not fit")), "does not fit")
        raise ConfigError(f"{what}: the kernel cannot launch, it {need.removeprefix('does not fit: ')}; "
                          "choose smaller block_m, block_n or num_stages in the mapping")


# what each workload-bound rank is called on the command line, for error messages
_RANK_MEANING = {"B": "batch", "H": "heads", "G": "kv_heads", "E": "head_dim", "F": "v_head_dim",
                 "M": "kv_len", "P": "q_len"}


def check_fixed_ranks(cascade: Cascade, problem: Problem) -> None:
    """A rank the cascade declares as a number (`E: 64`) must equal the workload's size for it:
    binding would otherwise override the declaration silently and estimate another shape than the
    cascade's author wrote (ShapeError naming the file, the rank and both fixes)."""
    sizes = problem.rank_sizes()
    for rank, declared in cascade.ranks.items():
        if isinstance(declared, bool) or not isinstance(declared, int) or rank not in sizes or sizes[rank] == declared:
            continue
        meaning = _RANK_MEANING.get(rank, rank)
        raise ShapeError(
            f"{cascade.source}: ranks.{rank} is declared {declared}, but the workload "
            f"({problem.name or 'shape'}) has {meaning} {sizes[rank]}; declare {rank}: {meaning} to take the "
            f"workload's size, or give a workload with {meaning} {declared}")


def resolve_cascade(cascade: Cascade | str | Path) -> Cascade:
    """A Cascade as is; a name or path loaded once per file version (sweeps load it many times)."""
    if isinstance(cascade, Cascade):
        return cascade
    if not isinstance(cascade, (str, Path)):
        raise SpecError(f"cascade: expected a Cascade, a library name or a path to a cascade YAML, got {brief(cascade)}")
    path = Path(cascade)
    stamp = path.stat().st_mtime_ns if path.suffix in (".yaml", ".yml") and is_file(path) else None
    return _load_cascade(str(cascade), stamp)


@lru_cache(maxsize=64)
def _load_cascade(name: str, stamp: int | None) -> Cascade:
    return load_cascade(name)


def resolve_target(target: Any):
    """A Target as is; a preset name or a YAML path loaded; anything else a SpecError."""
    if isinstance(target, (str, Path)):
        return load_target(target)
    if not isinstance(target, Target):
        raise SpecError(f"target: expected a Target, a preset name or a path to a target YAML, got {brief(target)}")
    return target


__all__ = ["Mapping", "resolve_cascade", "resolve_target", "simulate"]
