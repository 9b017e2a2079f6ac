"""The simulator's front door: resolve names to a cascade, a target and a mapping, then hand them to
the GPU model or the spatial-accelerator model, which both return an Estimate."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from einsim.einsum_cascades.ir import Cascade
from einsim.errors import ShapeError
from einsim.einsum_cascades.loader import load_cascade
from einsim.simulator.estimate import Estimate
from einsim.simulator.mapping import Mapping, load_mapping
from einsim.problem import Problem
from einsim.targets.loader import load_target


def simulate(cascade: Cascade | str | Path, problem: Problem, target: Any, mapping: Any = None) -> Estimate:
    """Estimate `cascade` (a Cascade, a library name or a YAML path) running `workload` on `target`
    (a Target, a preset name or a YAML path) under `mapping` (a Mapping, a dict, a YAML path, or
    None for the design's defaults). docs/simulator.md gives every formula."""
    cascade = resolve_cascade(cascade)
    target = resolve_target(target)
    check_fixed_ranks(cascade, problem)
    window_binding(cascade, problem)
    if target.kind == "gpu":
        from einsim.simulator.gpu_cost.estimate import simulate_gpu

        return simulate_gpu(cascade, problem, target, mapping)
    from einsim.simulator.spatial import simulate_spatial

    return simulate_spatial(cascade, problem, target, load_mapping(mapping))


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


WINDOW_SYMBOLS = ("window_left", "window_right")


def window_binding(cascade: Cascade, problem: Problem) -> dict[str, int]:
    """The cascade's sliding-window symbols bound to the problem's window. A cascade whose filter
    keeps a window of keys on a problem without a window is a ShapeError naming the fix: the
    YAML's symbol value is an example for running the cascade alone, never a workload parameter
    the simulator may invent."""
    symbols = getattr(cascade, "symbols", {}) or {}
    names = [s for s in WINDOW_SYMBOLS if s in symbols]
    if not names:
        return {}
    if problem.window is None:
        raise ShapeError(
            f"{cascade.source}: {cascade.name} keeps a sliding window of keys ({', '.join(names)} in its filter), but "
            f"the problem ({problem.label}) has no window; give it one: --window LEFT,RIGHT on the command line "
            f"(Mistral's causal window of 4096 keys is --window 4095,0), Problem(window=(left, right)) in Python, "
            f"or simulate a cascade without a window")
    return dict(zip(WINDOW_SYMBOLS, problem.window))


def resolve_cascade(cascade: Cascade | str | Path) -> Cascade:
    """A Cascade as is; a name or path loaded once per file version (sweeps load it many times)."""
    if isinstance(cascade, Cascade):
        return cascade
    path = Path(cascade)
    stamp = path.stat().st_mtime_ns if path.suffix in (".yaml", ".yml") and path.is_file() else None
    return _load_cascade(str(cascade), stamp)


@lru_cache(maxsize=64)
def _load_cascade(name: str, stamp: int | None) -> Cascade:
    return load_cascade(name)


def resolve_target(target: Any):
    return load_target(target) if isinstance(target, (str, Path)) else target


__all__ = ["Mapping", "resolve_cascade", "resolve_target", "simulate"]
