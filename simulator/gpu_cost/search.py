"""The mapping search of a GPU target: the tiles, warps and pipeline stages (within its shared
memory, registers and threads) under which a cascade's fused kernel is fastest, priced by the one
cost model. A mapping that cannot run is never a candidate (docs/simulator.md § GPU cost model,
"Mapping search")."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from einsim.simulator.gpu_cost.mapping import GpuMapping
from einsim.simulator.gpu_cost.model import KernelCost, kernel_cost

BLOCK_M = (64, 128, 256)
BLOCK_N = (32, 64, 128)
WARPS = (4, 8)
STAGES = (1, 2, 3, 4)


@dataclass(frozen=True)
class SearchResult:
    mapping: GpuMapping
    cost: KernelCost
    candidates: int  # mappings priced
    fitting: int  # of which could run


def search_mapping(cascade: Any, problem: Any, target: Any, base: GpuMapping, direction: str = "forward") -> SearchResult:
    """The fastest mapping that fits, over tiles x warps x stages (the base mapping's other fields
    kept); fitting == 0 means none can run on this target (the result is then the base's)."""
    best: tuple[float, GpuMapping, KernelCost] | None = None
    candidates = fitting = 0
    for block_m, block_n, warps, stages in itertools.product(BLOCK_M, BLOCK_N, WARPS, STAGES):
        mapping = replace(base, block_m=block_m, block_n=block_n, num_warps=warps, num_stages=stages)
        cost = kernel_cost(cascade, problem, target, mapping, direction)
        candidates += 1
        if not cost.fits:
            continue
        fitting += 1
        if best is None or cost.time_s < best[0]:
            best = (cost.time_s, mapping, cost)
    if best is None:
        return SearchResult(base, kernel_cost(cascade, problem, target, base, direction), candidates, 0)
    return SearchResult(best[1], best[2], candidates, fitting)


def has_tiles(mapping: GpuMapping) -> bool:
    """Whether the user fixed any of the tile fields (then they are honoured, fit or not)."""
    return any(getattr(mapping, name) is not None for name in ("block_m", "block_n", "num_warps", "num_stages"))
