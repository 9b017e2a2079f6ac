"""Tiles of an iteration space classified by a filter: empty (no point passes), full (every
point passes) or partial — exactly, by interval arithmetic over each tile and point-by-point
enumeration of the tiles it cannot decide; the exact point counts come with it.

The compiler skips empty tiles and drops the mask in full ones, the GPU model counts the tiles a
kernel visits, the spatial model the traffic and state of emptied tiles, and counting.py counts
the points of large iteration spaces with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from einsim.einsum_cascades.expr import Access, Binary, Compare, Coordinate, Logical, Name, Number
from einsim.einsum_cascades.intervals import Bounds, truth
from einsim.einsum_cascades.space import Space, gather, resolve_access
from einsim.einsum_cascades.values import holds
from einsim.errors import ShapeError
from einsim.tiling import TileCounts

EMPTY, PARTIAL, FULL = 0, 1, 2
_UNDECIDED = 3
# Points enumerated at once (numpy temporaries of this many float64 each).
_CHUNK_POINTS = 1 << 21
# Above this many points in undecided tiles, classifying is refused (it would take minutes).
ENUMERATE_LIMIT = 1 << 29


class TensorValues:
    """Input tensors a condition reads (DQ[b,p], BLOCKS[b,h,p1,m1]): their values at points, and
    their lowest and highest values over tiles."""

    def __init__(self, space: Space, declared: Mapping[str, tuple[str, ...]], arrays: Mapping[str, np.ndarray],
                 sizes: Mapping[str, int]):
        self.space, self.declared, self.sizes = space, dict(declared), sizes
        self.arrays = {}
        for name, ranks in self.declared.items():
            if name not in arrays:
                raise ShapeError(f"{space.name}: a filter reads {name} (ranks [{', '.join(ranks)}]); pass its values")
            array = np.asarray(arrays[name], dtype=np.float64)
            expected = tuple(sizes[r] for r in ranks)
            if array.shape != expected:
                axes = ", ".join(f"{r}={sizes[r]}" for r in ranks)
                raise ShapeError(f"{space.name}: {name} should have shape {expected} ({axes}), got {array.shape}")
            self.arrays[name] = array

    def reader(self, coords: Mapping[str, np.ndarray]):
        def read(access: Access) -> np.ndarray:
            reads = resolve_access(self.space, self.declared[access.tensor], access)
            return gather(self.arrays[access.tensor], reads, coords)
        return read

    def bounds_reader(self, box: Mapping[str, Bounds]):
        """Bounds of a read over each tile: exact when every axis is read at one position per
        tile or over aligned blocks of equal length (a tile of p, or of p1 from p); None (no
        bound: the tile is enumerated) otherwise."""
        def read(access: Access) -> Bounds | None:
            reads = resolve_access(self.space, self.declared[access.tensor], access)
            low = high = self.arrays[access.tensor]
            index = []
            for axis, read in enumerate(reads):
                extent = low.shape[axis]
                if read.kind == "const":
                    lo = hi = np.asarray(float(read.value))
                elif read.kind == "final":
                    lo = hi = np.asarray(float(extent - 1))
                else:
                    rank = read.source if read.kind == "coord" else read.rank
                    if rank not in box:
                        return None
                    lo, hi = box[rank]
                    lo, hi = np.asarray(lo) + read.offset, np.asarray(hi) + read.offset
                lo, hi = np.clip(lo, 0, extent - 1), np.clip(hi, 0, extent - 1)
                length = int(np.max(hi - lo)) + 1
                if length > 1:
                    aligned = np.all(np.mod(lo, length) == 0) and np.all((hi - lo + 1 == length) | (hi == extent - 1))
                    if not aligned:
                        return None
                    low, high = _block_reduce(low, high, axis, length)
                    lo = np.floor_divide(lo, length)
                index.append(lo.astype(np.int64))
            return low[tuple(index)], high[tuple(index)]
        return read


def _block_reduce(low: np.ndarray, high: np.ndarray, axis: int, length: int):
    """Minimum of `low` and maximum of `high` over blocks of `length` along `axis`."""
    extent = low.shape[axis]
    blocks = -(-extent // length)
    pad = [(0, 0)] * low.ndim
    pad[axis] = (0, blocks * length - extent)
    shape = list(low.shape)
    shape[axis:axis + 1] = [blocks, length]
    low = np.pad(low, pad, constant_values=np.inf).reshape(shape).min(axis=axis + 1)
    high = np.pad(high, pad, constant_values=-np.inf).reshape(shape).max(axis=axis + 1)
    return low, high


@dataclass(frozen=True)
class GridClassification:
    """Tiles over some ranks (`tiles`: rank -> tile size), each EMPTY, PARTIAL or FULL, with the
    number of points that pass (`count`) and the tile's points (`volume`, short at the ends)."""

    ranks: tuple[str, ...]
    tiles: Mapping[str, int]
    state: np.ndarray  # int8, one axis per rank: EMPTY / PARTIAL / FULL
    count: np.ndarray  # int64: points of the tile that pass
    volume: np.ndarray  # int64: points of the tile

    @property
    def points(self) -> int:
        return int(self.count.sum())


def classify_grid(condition, space: Space, sizes: Mapping[str, int], tiles: Mapping[str, int],
                  values: TensorValues | None = None, *, valid=None) -> GridClassification:
    """Classify the tiles of `tiles` (rank -> tile size; tiles start at 0, the last may be short)
    under `condition` (None: every point passes), exactly: interval arithmetic decides most
    tiles, the rest are enumerated. `valid`, a condition too, marks which points exist at all
    (a partitioned rank's tail: m1*M0 + m0 < M); points outside it are neither counted nor
    make a tile partial."""
    ranks = tuple(tiles)
    k = len(ranks)
    counts_per_axis = [-(-sizes[r] // tiles[r]) for r in ranks]
    box = {}
    volume = np.ones([1] * k, dtype=np.int64)
    for axis, rank in enumerate(ranks):
        shape = [1] * k
        shape[axis] = counts_per_axis[axis]
        lo = np.arange(counts_per_axis[axis], dtype=np.int64).reshape(shape) * tiles[rank]
        hi = np.minimum(lo + tiles[rank], sizes[rank]) - 1
        box[rank] = (lo, hi)
        volume = volume * (hi - lo + 1)
    grid_shape = tuple(counts_per_axis)
    volume = np.broadcast_to(volume, grid_shape)
    derived = space.coordinate_bounds(box, sizes)
    reader = values.bounds_reader(derived) if values is not None else None
    decided_true = np.ones(grid_shape, dtype=bool)
    decided_false = np.zeros(grid_shape, dtype=bool)
    if condition is not None:
        always, never = truth(condition, derived, sizes, reader)
        decided_true &= np.broadcast_to(always, grid_shape)
        decided_false |= np.broadcast_to(never, grid_shape)
    if valid is not None:
        # a tile all of whose points exist, or none of them
        all_exist, none_exist = truth(valid, derived, sizes, None)
        decided_true &= np.broadcast_to(all_exist, grid_shape)
        decided_false |= np.broadcast_to(none_exist, grid_shape)
    state = np.where(decided_true, FULL, np.where(decided_false, EMPTY, _UNDECIDED)).astype(np.int8)
    count = np.where(state == FULL, volume, 0).astype(np.int64)
    undecided = np.argwhere(state == _UNDECIDED)
    per_tile = math.prod(tiles[r] for r in ranks)
    if len(undecided) * per_tile > ENUMERATE_LIMIT:
        raise ShapeError(
            f"{space.name}: {len(undecided)} tiles of {per_tile} points over ranks {', '.join(ranks)} need "
            "point-by-point classification; use smaller sizes"
        )
    chunk = max(1, _CHUNK_POINTS // per_tile)
    for start in range(0, len(undecided), chunk):
        picked = undecided[start:start + chunk]
        coords = {}
        exists = np.ones([len(picked)] + [tiles[r] for r in ranks], dtype=bool)
        for axis, rank in enumerate(ranks):
            shape = [len(picked)] + [1] * k
            offsets = [1] * (k + 1)
            offsets[axis + 1] = tiles[rank]
            position = picked[:, axis].reshape(shape) * tiles[rank] + np.arange(tiles[rank]).reshape(offsets)
            exists &= position < sizes[rank]
            coords[rank] = position
        coords, _ = space.coordinates(coords, sizes)
        existing = exists if valid is None else exists & holds(valid, coords, sizes)
        passed = existing
        if condition is not None:
            read = values.reader(coords) if values is not None else None
            passed = existing & holds(condition, coords, sizes, read)
        passed, existing = np.broadcast_to(passed, exists.shape), np.broadcast_to(existing, exists.shape)
        found = passed.reshape(len(picked), -1).sum(axis=1)
        real = existing.reshape(len(picked), -1).sum(axis=1)
        where = tuple(picked.T)
        count[where] = found
        state[where] = np.where(found == 0, EMPTY, np.where(found == real, FULL, PARTIAL))
    return GridClassification(ranks, dict(tiles), state, count, np.asarray(volume))


def choose_tiles(ranks, sizes: Mapping[str, int], max_tiles: int = 1 << 20) -> dict[str, int]:
    """Tile sizes (powers of two) that cut the ranks into at most `max_tiles` tiles, halving the
    rank with the most tiles first."""
    tiles = {rank: 1 for rank in ranks}

    def tiles_along(rank: str) -> int:
        return -(-sizes[rank] // tiles[rank])

    while math.prod(tiles_along(r) for r in ranks) > max_tiles:
        widest = max(ranks, key=tiles_along)
        tiles[widest] *= 2
    return tiles


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
                   key: str = "M", problem=None) -> TileClassification:
    """Classify the (query tile, key tile) pairs of `cascade` (its cascade-wide filters, and-ed,
    and the causal / window mask of `problem` when given) at bound `sizes`, tiles of block_q
    queries x block_k keys; `tensors` gives the inputs a filter reads (document ids, a block
    mask). Exact: interval arithmetic decides the tiles it can, the rest are enumerated."""
    for rank in (query, key):
        if rank not in cascade.ranks:
            raise ShapeError(f"{cascade.name}: no rank {rank}; ranks: {', '.join(cascade.ranks)}")
    for name, block in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ShapeError(f"{cascade.name}: {name} must be a positive integer, got {block!r}")
    space = cascade.space
    bound = cascade.bind(sizes)
    filters = tuple(cascade.filters)
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
    terms = [f.condition for f in filters]
    if problem is not None and mask_condition(problem, key, query) is not None:
        terms.append(mask_condition(problem, key, query))
    condition = None if not terms else terms[0] if len(terms) == 1 else Logical("and", tuple(terms))
    tiles = {**{rank: 1 for rank in batch}, query: block_q, key: block_k}
    grid = classify_grid(condition, space, bound, tiles, values)
    return TileClassification(query, key, block_q, block_k, tuple(batch), grid.state, grid.count,
                              np.asarray(grid.volume, dtype=np.int64), bound[query], bound[key],
                              None if batch else condition, space, bound)
