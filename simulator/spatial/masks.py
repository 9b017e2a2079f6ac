"""Which (key tile x query tile) tiles a causal or windowed workload lets the hardware skip, and
the share of K and V that is distinct data under grouped-query attention (§3.1, §5.2)."""

from __future__ import annotations

import math

import numpy as np

from einsim.problem import Problem


def problem_kv_share(problem: Problem) -> float:
    """K and V counted per query head hold each KV head's data group_size times (GQA)."""
    return problem.kv_heads / problem.q_heads


def visible_tile_fraction(problem: Problem, key_tile: int, query_tile: int) -> float:
    """§3.1 fraction of (key_tile x query_tile) tiles with at least one visible (query, key) pair
    under the workload's causal/window mask (einsim's bottom-right alignment, reference.py)."""
    return visible_key_tiles(problem, key_tile, query_tile)[0]


def visible_key_tiles(problem: Problem, key_tile: int, query_tile: int) -> tuple[float, float]:
    """(mean, most) share of the key tiles one block of `query_tile` queries sees under the
    mask: the first is the block's K/V reads, the second the keys a row of its QK can hold."""
    q_len, kv_len = problem.q_len, problem.kv_len
    starts = np.arange(0, q_len, max(1, query_tile))
    ends = np.minimum(starts + query_tile, q_len) - 1
    offset = kv_len - q_len
    low = np.zeros(len(starts))
    high = np.full(len(starts), kv_len - 1.0)
    if problem.window is not None:
        left, right = problem.window
        low = starts + offset - left
        high = ends + offset + right
    if problem.causal:
        high = np.minimum(high, ends + offset)
    low, high = np.clip(low, 0, kv_len - 1), np.clip(high, -1, kv_len - 1)
    tiles = np.where(high >= low, np.floor(high / key_tile) - np.floor(low / key_tile) + 1, 0)
    total = math.ceil(kv_len / key_tile)
    return float(tiles.sum() / (len(starts) * total)), float(tiles.max() / total)
