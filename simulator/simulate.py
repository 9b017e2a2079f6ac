"""The simulator's front door: resolve names to a cascade, a target and a mapping, then hand them to
the GPU model or the spatial-accelerator model, which both return an Estimate."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from einsim.einsum_cascades.ir import Cascade
from einsim.einsum_cascades.loader import load_cascade
from einsim.simulator.estimate import Estimate
from einsim.simulator.mapping import Mapping, load_mapping
from einsim.simulator.workload import Workload
from einsim.targets.loader import load_target


def simulate(cascade: Cascade | str | Path, workload: Workload, target: Any, mapping: Any = None) -> Estimate:
    """Estimate `cascade` (a Cascade, a library name or a YAML path) running `workload` on `target`
    (a Target, a preset name or a YAML path) under `mapping` (a Mapping, a dict, a YAML path, or
    None for the design's defaults). docs/simulator.md gives every formula."""
    cascade = resolve_cascade(cascade)
    target = resolve_target(target)
    if target.kind == "gpu":
        from einsim.simulator.gpu import simulate_gpu

        return simulate_gpu(cascade, workload, target, mapping)
    from einsim.simulator.spatial import simulate_spatial

    return simulate_spatial(cascade, workload, target, load_mapping(mapping))


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
