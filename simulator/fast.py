"""Sweeps of many mapping and design points of one spatial design at once: the model evaluated
over numpy arrays (docs/simulator.md §9), >= 1e5 points per second on one core."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from einsim.simulator.mapping import Mapping, load_mapping
from einsim.simulator.simulate import resolve_cascade, resolve_target
from einsim.simulator.spatial import compile_design
from einsim.problem import Problem


def sweep_mappings(cascade: Any, problem: Problem, target: Any, *, key_tiles: Sequence[int | None] = (None,),
                   query_tiles: Sequence[int] | None = None, query_blocks: Sequence[int] | None = None,
                   capacities: Sequence[float] | None = None, dram_bandwidths: Sequence[float] | None = None,
                   spills: Sequence[str] = ("store",), mapping: Any = None) -> dict[str, np.ndarray]:
    """Latency, DRAM traffic, energy, buffer need and fit at every combination of the given
    values (the Cartesian product), as flat arrays with one entry per point and the parameter
    columns beside them. None values use the design's own (its key tile, array-width query tile,
    searched query blocks, its buffer and bandwidth). Every group of the design runs at the
    point's parameters."""
    cascade, target = resolve_cascade(cascade), resolve_target(target)
    base = load_mapping(mapping)
    columns: dict[str, list[np.ndarray]] = {}
    for key_tile, spill in itertools.product(key_tiles, spills):
        design = compile_design(cascade, problem, target, Mapping(**{**base.__dict__, "key_tile": key_tile}))
        grid = np.meshgrid(
            np.asarray(query_blocks if query_blocks is not None else design.mapping.query_blocks, dtype=float),
            np.asarray(query_tiles if query_tiles is not None else [design.mapping.query_tile], dtype=float),
            np.asarray(capacities if capacities is not None else [design.buffer_level.capacity_bytes], dtype=float),
            np.asarray(dram_bandwidths if dram_bandwidths is not None else [design.dram.bandwidth("measured")], dtype=float),
            indexing="ij",
        )
        block, tile, cap, bandwidth = (a.ravel() for a in grid)
        result = design.evaluate(block, spill, cap, tile, bandwidth)
        part = {
            "key_tile": np.full(block.shape, design.mapping.key_tile or 0, dtype=float),
            "query_tile": tile, "query_block": block, "capacity_bytes": cap, "dram_bandwidth": bandwidth,
            "spill": np.full(block.shape, spill, dtype=object),
            "latency_s": result["latency_s"], "traffic_bytes": result["traffic_bytes"], "energy_j": result["energy_j"],
            "buffer_bytes": result["buffer_bytes"], "fits": result["fits"], "feasible": result["feasible"],
        }
        for key, value in part.items():
            columns.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(values) for key, values in columns.items()}


def best(points: dict[str, np.ndarray], by: str = "latency_s") -> dict[str, Any]:
    """The point with the least `by` (ties: least traffic, then energy) among feasible ones."""
    order = np.lexsort((points["energy_j"], points["traffic_bytes"], np.where(points["feasible"], points[by], np.inf)))
    index = int(order[0])
    return {key: (value[index].item() if hasattr(value[index], "item") else value[index]) for key, value in points.items()}
