"""Exact tile counts of a bottom-right aligned causal / sliding-window mask: per query tile, the
key tiles it visits and how many of them the mask leaves whole; per key tile, the transpose.
The one tile counter of kernels, the GPU cost model and the autotuner (Problem.tile_counts and
Problem.key_tile_counts call it; einsum_cascades.tiles gives the same counts for any filter).

A query tile of block_m rows visits the key tiles from the one holding its first row's lowest
visible key up to its last row's highest (kernels skip the others: Problem.tile_key_range); a
visited tile is *full* when every row of the query tile sees every key in it, else *partial* (a
causal diagonal, a window's edges, the ragged last tile). Vectorised and cached: the simulator
asks for the same shapes thousands of times. Bottom layer: numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class TileCounts:
    """Per query tile (in order): its rows, visited key tiles and how many of them are full."""

    block_m: int
    block_n: int
    rows: np.ndarray  # valid rows of each query tile
    visited: np.ndarray  # key tiles each query tile visits
    full: np.ndarray  # of which every row sees every key
    first_key: np.ndarray  # key position where each query tile's visit starts (a tile boundary)
    last_key: np.ndarray  # the last key any row of the query tile sees (first_key - 1 when none)
    exact_pairs: float  # (query, key) pairs the mask keeps, one head (the mean head when copies > 1)
    kv_lo: int  # keys [kv_lo, kv_hi) some query sees
    kv_hi: int
    # A mask that differs per batch element or head (a filter reading document ids or a block
    # mask): the arrays hold `copies` heads' query tiles one after another, and every per-head
    # figure below is their mean. `kv_seen` is then the mean share of a head's key tiles that
    # some query tile visits (what K/V traffic reads); None: [kv_lo, kv_hi) in whole tiles.
    copies: int = 1
    kv_seen: float | None = None

    @property
    def query_tiles(self) -> int:
        """Query tiles of one head."""
        return self.visited.size // max(1, self.copies)

    @property
    def partial(self) -> np.ndarray:
        return self.visited - self.full

    @property
    def visited_pairs(self) -> float:
        """(query tile, key tile) pairs visited, one head (the mean head when copies > 1)."""
        return float(self.visited.sum()) / self.copies

    @property
    def row_tile_pairs(self) -> float:
        """Sum over query tiles of valid rows x visited key tiles (per-tile state of one head)."""
        return float(np.dot(self.rows, self.visited)) / self.copies

    @property
    def row_key_pairs(self) -> float:
        """Sum over query tiles of valid rows x keys from the visit's start to the last visible
        key (scores a kernel computes and may write, one head)."""
        span = np.clip(self.last_key + 1 - self.first_key, 0, None)
        return float(np.dot(self.rows, span)) / self.copies


@lru_cache(maxsize=4096)
def tile_counts(q_len: int, kv_len: int, causal: bool, window: tuple[int, int] | None,
                block_m: int, block_n: int) -> TileCounts:
    """Visited and full key tiles of every query tile for a bottom-right aligned mask (query row
    i sits at key position i + kv_len - q_len; causal keeps keys <= it, window=(left, right)
    keeps position - left .. position + right)."""
    offset = kv_len - q_len
    q_tiles = math.ceil(q_len / block_m)
    first = np.arange(q_tiles, dtype=np.int64) * block_m
    last = np.minimum(first + block_m, q_len) - 1

    def low(row: np.ndarray) -> np.ndarray:
        return np.maximum(0, row + offset - window[0]) if window is not None else np.zeros_like(row)

    def high(row: np.ndarray) -> np.ndarray:  # exclusive
        hi = np.full_like(row, kv_len)
        if causal:
            hi = np.minimum(hi, row + offset + 1)
        if window is not None:
            hi = np.minimum(hi, row + offset + window[1] + 1)
        return hi

    lo = (low(first) // block_n) * block_n
    hi = high(last)
    visited = np.where(hi > lo, -(-(hi - lo) // block_n), 0)
    # full tiles: starts s = lo + t * block_n with s >= low(last) and s + block_n <= min(high(first), kv_len)
    full_lo, full_hi = low(last), np.minimum(high(first), kv_len)
    t_first = -(-(full_lo - lo) // block_n)
    t_last = (full_hi - lo) // block_n - 1
    full = np.clip(np.minimum(t_last, visited - 1) - np.maximum(t_first, 0) + 1, 0, None)
    rows_all = np.arange(q_len, dtype=np.int64)
    row_lo, row_hi = low(rows_all), high(rows_all)
    keep = row_hi > row_lo
    exact = float(np.clip(row_hi - row_lo, 0, None).sum())
    kv_lo = int(row_lo[keep].min()) if keep.any() else 0
    kv_hi = int(row_hi[keep].max()) if keep.any() else 0
    return TileCounts(block_m=block_m, block_n=block_n, rows=(last - first + 1).astype(np.float64),
                      visited=visited.astype(np.int64), full=np.minimum(full, visited).astype(np.int64),
                      first_key=lo, last_key=np.maximum(hi - 1, lo - 1), exact_pairs=exact,
                      kv_lo=kv_lo, kv_hi=kv_hi)


@lru_cache(maxsize=1024)
def key_tile_counts(q_len: int, kv_len: int, causal: bool, window: tuple[int, int] | None,
                    block_m: int, block_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(visited, full) query tiles of each key tile (the transpose of `tile_counts`)."""
    counts = tile_counts(q_len, kv_len, causal, window, block_m, block_n)
    key_tiles = math.ceil(kv_len / block_n)
    visited = np.zeros(key_tiles, dtype=np.int64)
    full = np.zeros(key_tiles, dtype=np.int64)
    for start, n_visited, n_full in zip(counts.first_key // block_n, counts.visited, counts.full):
        if n_visited:
            visited[start:start + n_visited] += 1
    # a full pair is full from either side; place each query tile's full tiles at its visit's
    # interior (the full tiles of a visit are contiguous and start after its leading partial ones)
    lead = _leading_partial(q_len, kv_len, causal, window, counts)
    for start, n_full, n_lead in zip(counts.first_key // block_n, counts.full, lead):
        if n_full:
            full[start + n_lead:start + n_lead + n_full] += 1
    return visited, full


def _leading_partial(q_len: int, kv_len: int, causal: bool, window: tuple[int, int] | None,
                     counts: TileCounts) -> np.ndarray:
    """Partial tiles before the first full one in each query tile's visit (a window's left edge)."""
    if window is None:
        return np.zeros_like(counts.visited)
    offset = kv_len - q_len
    last = np.minimum(np.arange(counts.visited.size) * counts.block_m + counts.block_m, q_len) - 1
    full_lo = np.maximum(0, last + offset - window[0])
    lead = -(-(full_lo - counts.first_key) // counts.block_n)
    return np.clip(lead, 0, counts.visited - counts.full)
