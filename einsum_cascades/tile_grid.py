"""Tiles of an iteration space classified by a condition: empty (no point passes), full (every
point passes) or partial — exactly, by interval arithmetic over each tile, by the halves of tiles
the data splits (a block mask finer than the tiles), and by point-by-point enumeration of the
tiles neither decides; the exact point counts come with it. einsum_cascades.tiles applies it to
an attention cascade's (query tile, key tile) plane; counting.py counts large spaces with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from einsim.einsum_cascades.expr import Access
from einsim.einsum_cascades.intervals import Bounds, truth
from einsim.einsum_cascades.space import Space, gather, resolve_access
from einsim.einsum_cascades.values import holds
from einsim.errors import ShapeError

EMPTY, PARTIAL, FULL = 0, 1, 2
_UNDECIDED = 3
# Points enumerated at once (numpy temporaries of this many float64 each).
_CHUNK_POINTS = 1 << 21
# Above this many points in undecided tiles, classifying is refused (it would take minutes).
ENUMERATE_LIMIT = 1 << 29
# Undecided tiles holding more points than this are classified by their halves first (a block
# mask finer than the tiles decides the halves by bounds), while the halves number at most
# REFINE_TILES.
REFINE_POINTS = 1 << 22
REFINE_TILES = 1 << 24


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
                  values: TensorValues | None = None, *, valid=None, bounds_only: bool = False) -> GridClassification:
    """Classify the tiles of `tiles` (rank -> tile size; tiles start at 0, the last may be short)
    under `condition` (None: every point passes), exactly: interval arithmetic decides most
    tiles, the rest are enumerated. `valid`, a condition too, marks which points exist at all
    (a partitioned rank's tail: m1*M0 + m0 < M); points outside it are neither counted nor
    make a tile partial. `bounds_only`: no enumeration; a tile the bounds do not decide is
    PARTIAL with every point counted (an upper bound)."""
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
    if bounds_only:
        open_tiles = state == _UNDECIDED
        state[open_tiles], count[open_tiles] = PARTIAL, np.broadcast_to(volume, grid_shape)[open_tiles]
        return GridClassification(ranks, dict(tiles), state, count, np.asarray(volume))
    undecided = np.argwhere(state == _UNDECIDED)
    per_tile = math.prod(tiles[r] for r in ranks)
    halved = {r: t // 2 if t % 2 == 0 else t for r, t in tiles.items()}
    if (len(undecided) * per_tile > REFINE_POINTS and halved != tiles
            and math.prod(-(-sizes[r] // halved[r]) for r in ranks) <= REFINE_TILES):
        # tiles the data splits (a block mask finer than the tile): classify halves, then merge
        finer = classify_grid(condition, space, sizes, halved, values, valid=valid)
        return _merged(finer, tiles, grid_shape, state, count, volume)
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


def _merged(finer: GridClassification, tiles: Mapping[str, int], grid_shape: tuple[int, ...], state: np.ndarray,
            count: np.ndarray, volume: np.ndarray) -> GridClassification:
    """The tiles of `tiles` from their halves' classification: the undecided ones (state
    _UNDECIDED) take their halves' counts and are empty, full or partial as those are."""
    fine_state, fine_count = finer.state, finer.count
    fine_volume = np.broadcast_to(finer.volume, fine_state.shape)
    exists = fine_volume > 0
    for axis, rank in enumerate(finer.ranks):
        factor = tiles[rank] // finer.tiles[rank]
        if factor == 1:
            continue
        pad = [(0, 0)] * fine_state.ndim
        pad[axis] = (0, grid_shape[axis] * factor - fine_state.shape[axis])
        shape = list(fine_state.shape)
        shape[axis:axis + 1] = [grid_shape[axis], factor]
        any_axis = axis + 1

        def fold(array, reduce, fill):
            return reduce(np.pad(array, pad, constant_values=fill).reshape(shape), axis=any_axis)
        all_empty = fold((fine_state == EMPTY) | ~exists, np.all, True)
        all_full = fold((fine_state == FULL) | ~exists, np.all, True)
        fine_count = fold(fine_count, np.sum, 0)
        exists = fold(exists, np.any, False)
        fine_state = np.where(all_empty, EMPTY, np.where(all_full, FULL, PARTIAL)).astype(np.int8)
    merged_state = np.where(state == _UNDECIDED, fine_state, state).astype(np.int8)
    merged_count = np.where(state == _UNDECIDED, fine_count, count).astype(np.int64)
    return GridClassification(finer.ranks, dict(tiles), merged_state, merged_count, np.asarray(volume))


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
