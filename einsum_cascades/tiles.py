"""The (query tile, key tile) plane of an attention cascade classified by its filters and the
problem's mask: empty (no point passes), full (every point passes) or partial, exactly
(einsum_cascades.tile_grid), with the exact point counts.

The compiler skips empty tiles and drops the mask in full ones, the GPU model counts the tiles a
kernel visits, the spatial model the traffic and state of emptied tiles, and counting.py counts
the points of large iteration spaces with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from einsim.einsum_cascades.expr import Access, Binary, Compare, Coordinate, Logical, Name, Number, walk
from einsim.einsum_cascades.tile_grid import _CHUNK_POINTS, EMPTY, FULL, PARTIAL, TensorValues, classify_grid
from einsim.einsum_cascades.values import holds
from einsim.errors import ShapeError
from einsim.tiling import TileCounts

# --- the (query tile, key tile) classification of an attention cascade --------------------------

@dataclass(frozen=True)
class TileClassification:
    """Each (query tile, key tile) of an attention cascade under its filters: EMPTY (skip it
    without loading K/V), PARTIAL (compute it with the element mask) or FULL (no mask needed),
    with the visible (query, key) pairs of each tile.

    Arrays are [*batch, query tiles, key tiles], where `batch` are the other ranks the filters
    read (B and H for BLOCKS[b,h,p1,m1], B for DQ[b,p]; none for causal), one position each.
    """

    query: str  # the query rank (P)
    key: str  # the key rank (M)
    block_q: int
    block_k: int
    batch: tuple[str, ...]
    state: np.ndarray  # int8: EMPTY / PARTIAL / FULL
    count: np.ndarray  # int64: visible (query, key) pairs of the tile
    volume: np.ndarray  # int64: pairs of the tile (short at the ends)
    q_len: int = 0
    kv_len: int = 0
    _condition: object = field(default=None, repr=False, compare=False)
    _space: object = field(default=None, repr=False, compare=False)
    _sizes: Mapping = field(default=None, repr=False, compare=False)

    @property
    def visible_pairs(self) -> int:
        return int(self.count.sum())

    def summary(self) -> dict[str, int | float]:
        """Tile counts by kind and visible pairs (over all batch positions)."""
        tiles = int(self.state.size)
        empty, partial, full = (int((self.state == kind).sum()) for kind in (EMPTY, PARTIAL, FULL))
        pairs = int(np.broadcast_to(self.volume, self.state.shape).sum())
        return {"tiles": tiles, "empty": empty, "partial": partial, "full": full,
                "visible_pairs": self.visible_pairs, "pairs": pairs,
                "visited_fraction": (partial + full) / tiles if tiles else 0.0,
                "density": self.visible_pairs / pairs if pairs else 0.0}

    def key_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """For each query tile, the first and one past the last key tile it must visit
        ([*batch, query tiles]; 0, 0 when it visits none). Tiles inside may still be empty
        (sinks + window): key_lists() gives exactly which."""
        return _ranges(self.state != EMPTY)

    def query_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """For each key tile, the first and one past the last query tile that sees it
        ([*batch, key tiles]): the backward's dK/dV loop."""
        return _ranges(np.swapaxes(self.state != EMPTY, -1, -2))

    def key_lists(self) -> dict[str, np.ndarray]:
        """FlexAttention's BlockMask layout: per query tile the number and the indices (first,
        in increasing order, then padding) of its partial key tiles and of its full ones:
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices (int32)."""
        return {**_lists(self.state == PARTIAL, "kv"), **_lists(self.state == FULL, "full_kv")}


    def tile_counts(self) -> TileCounts:
        """The per-query-tile counts in `einsim.tiling.TileCounts`' form (what the GPU model
        walks for causal and window masks), for any coordinate filter: `visited` counts the
        non-empty key tiles (a kernel skips the empty ones between, as sinks + window's), `full`
        those needing no mask, `first_key` the start of the first one, `last_key` the last key
        any row sees. One head: refused when the filters read tensors per batch or head."""
        self._one_head()
        visit = self.state != EMPTY
        seen = visit.any(axis=1)
        first, end = self.key_ranges()
        tiles = np.arange(self.state.shape[0])
        rows = np.minimum(self.block_q, self.q_len - tiles * self.block_q).astype(np.float64)
        last_key = np.where(seen, self._extreme_keys(tiles, end - 1, last=True), first * self.block_k - 1)
        whole_key_tiles = self.kv_len // self.block_k  # a short last key tile still needs the bounds mask
        first_seen = self._extreme_keys(tiles, first, last=False)
        kv_lo = int(first_seen[seen].min()) if seen.any() else 0
        kv_hi = int(last_key[seen].max()) + 1 if seen.any() else 0
        return TileCounts(block_m=self.block_q, block_n=self.block_k, rows=rows,
                          visited=visit.sum(axis=1).astype(np.int64),
                          full=(self.state[:, :whole_key_tiles] == FULL).sum(axis=1).astype(np.int64),
                          first_key=(first * self.block_k).astype(np.int64), last_key=last_key.astype(np.int64),
                          exact_pairs=float(self.visible_pairs), kv_lo=kv_lo, kv_hi=kv_hi)

    def _one_head(self) -> None:
        if self.batch:
            raise ShapeError(
                f"the tiles differ per {', '.join(self.batch)} (the filters read tensors); use state and count "
                "per position instead of one head's counts"
            )

    def key_tile_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per key tile: the query tiles that visit it and how many of those need no mask (a
        short last key tile always does), as `einsim.problem.Problem.key_tile_counts`: what a
        backward's dK/dV programs walk. One head, as tile_counts()."""
        self._one_head()
        whole_key_tiles = self.kv_len // self.block_k
        full = (self.state == FULL)
        full[:, whole_key_tiles:] = False
        return (self.state != EMPTY).sum(axis=0).astype(np.int64), full.sum(axis=0).astype(np.int64)

    def _extreme_keys(self, query_tiles: np.ndarray, key_tiles: np.ndarray, last: bool) -> np.ndarray:
        """The last (or first) key position any row of each query tile sees within the given key
        tile, by enumerating those tiles (-1 where none)."""
        keys = np.arange(self.block_k)
        found = np.full(len(query_tiles), -1, dtype=np.int64)
        chunk = max(1, _CHUNK_POINTS // (self.block_q * self.block_k))
        for start in range(0, len(query_tiles), chunk):
            q_tiles = query_tiles[start:start + chunk]
            k_tiles = np.clip(key_tiles[start:start + chunk], 0, self.state.shape[1] - 1)
            query = (q_tiles[:, None, None] * self.block_q + np.arange(self.block_q)[None, :, None])
            key = k_tiles[:, None, None] * self.block_k + keys[None, None, :]
            inside = (query < self.q_len) & (key < self.kv_len)
            coords, _ = self._space.coordinates({self.query: query, self.key: key}, self._sizes)
            passed = inside
            if self._condition is not None:
                passed = inside & holds(self._condition, coords, self._sizes)
            passed = np.broadcast_to(passed, inside.shape).any(axis=1)  # [tiles, keys]
            positions = np.broadcast_to(key[:, 0, :], passed.shape)
            if last:
                value = np.where(passed, positions, -1).max(axis=1)
            else:
                value = np.where(passed, positions, np.iinfo(np.int64).max).min(axis=1)
                value = np.where(passed.any(axis=1), value, -1)
            found[start:start + chunk] = value
        return found


def _ranges(visit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    any_visit = visit.any(axis=-1)
    first = np.where(any_visit, np.argmax(visit, axis=-1), 0)
    last = np.where(any_visit, visit.shape[-1] - np.argmax(visit[..., ::-1], axis=-1), 0)
    return first.astype(np.int64), last.astype(np.int64)


def _lists(chosen: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    order = np.argsort(~chosen, axis=-1, kind="stable")  # chosen tiles first, in increasing order
    return {f"{prefix}_num_blocks": chosen.sum(axis=-1).astype(np.int32), f"{prefix}_indices": order.astype(np.int32)}


def mask_condition(problem, key: str = "M", query: str = "P"):
    """A problem's causal / window mask (einsim.problem.Problem: bottom-right aligned, query p
    at key position p + M - P) as a filter condition, or None when it has neither."""
    position = Binary("+", Coordinate(query), Binary("-", Name(key), Name(query)))
    terms = []
    if problem.causal:
        terms.append(Compare("<=", Coordinate(key), position))
    if problem.window is not None:
        left, right = problem.window
        terms.append(Compare(">=", Coordinate(key), Binary("-", position, Number(float(left)))))
        terms.append(Compare("<=", Coordinate(key), Binary("+", position, Number(float(right)))))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else Logical("and", tuple(terms))


def classify_tiles(cascade, sizes: Mapping[str, int] | None = None, block_q: int = 128, block_k: int = 128,
                   tensors: Mapping[str, np.ndarray] | None = None, *, query: str = "P",
                   key: str = "M", problem=None, drop_reads: bool = False) -> TileClassification:
    """Classify the (query tile, key tile) pairs of `cascade` (its cascade-wide filters, and-ed,
    and the causal / window mask of `problem` when given) at bound `sizes`, tiles of block_q
    queries x block_k keys; `tensors` gives the inputs a filter reads (document ids, a block
    mask). Exact: interval arithmetic decides the tiles it can, the rest are enumerated.
    `drop_reads`: without the tensors, leave out the and-terms that read them (what is left keeps
    every point they keep: an upper bound, e.g. packed documents' causal term alone)."""
    for rank in (query, key):
        if rank not in cascade.ranks:
            raise ShapeError(f"{cascade.name}: no rank {rank}; ranks: {', '.join(cascade.ranks)}")
    for name, block in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ShapeError(f"{cascade.name}: {name} must be a positive integer, got {block!r}")
    space = cascade.space
    bound = cascade.bind(sizes)
    filters = tuple(cascade.filters)
    terms = [f.condition for f in filters]
    if drop_reads:
        terms = [term for f in filters for term in f.conditions if not any(isinstance(n, Access) for n in walk(term))]
        filters = ()
    families = space.family(query) | space.family(key)
    batch: list[str] = []
    for flt in filters:
        for rank in flt.ranks:
            root = space.root(rank)
            if rank not in families and root not in families and root not in batch:
                batch.append(root)
    declared = {name: ranks for f in filters for name, ranks in f.tensor_ranks.items()}
    values = None
    if declared:
        if tensors is None:
            names = ", ".join(declared)
            raise ShapeError(f"{cascade.name}: the filters read {names}: which tiles they keep depends on their values; pass them")
        values = TensorValues(space, declared, tensors, bound)
    if problem is not None and mask_condition(problem, key, query) is not None:
        terms.append(mask_condition(problem, key, query))
    condition = None if not terms else terms[0] if len(terms) == 1 else Logical("and", tuple(terms))
    tiles = {**{rank: 1 for rank in batch}, query: block_q, key: block_k}
    grid = classify_grid(condition, space, bound, tiles, values)
    return TileClassification(query, key, block_q, block_k, tuple(batch), grid.state, grid.count,
                              np.asarray(grid.volume, dtype=np.int64), bound[query], bound[key],
                              None if batch else condition, space, bound)
