"""The tiles a GPU kernel visits when a cascade's filters read data — packed documents' ids
(DQ[b,p] == DK[b,m]), a block mask (BLOCKS[b,h,p1,m1] != 0) — classified exactly from the
values in `Problem.filter_inputs` (arrays, or a statistical description expanded by
einsum_cascades.filter_values), and what building the block mask costs per call
(docs/simulator.md § Filters that read data).

Such a mask differs per batch element (documents) or per batch element and head (a block mask),
so the counts stack every such copy's query tiles (`TileCounts.copies`): the kernel's programs
are timed one by one, the per-head figures (pairs, K/V read) are the copies' mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from einsim.einsum_cascades.expr import Access, Binary, Compare, Logical, Not, Unary, walk
from einsim.einsum_cascades.filter_values import filter_values
from einsim.einsum_cascades.tile_grid import EMPTY, FULL
from einsim.einsum_cascades.tiles import TileClassification, classify_tiles
from einsim.simulator.gpu_cost.engine import Launch, ProgramGroup, TileWork
from einsim.tiling import TileCounts

# torch kernels that turn the tile classes into the kernels' tile lists (einsim.kernels.compiler
# .launch.tile_lists: bool casts, and/not, two counts, two stable sorts, the list tensor)
LIST_KERNELS = 9
# the classes kernel: 4 warps, no shared memory, few registers: as many programs per SM as the
# SM's 64 warps hold
CLASS_PROGRAMS_PER_SM = 16


@dataclass(frozen=True)
class DataMask:
    """The tiles a cascade's data-reading filters (and the problem's mask) keep, for the values
    the problem carries; the same interface as Problem's tile_counts / key_tile_counts."""

    cascade: Any
    problem: Any
    sizes: tuple  # the cascade's bound sizes, as sorted (rank, size) pairs

    def classification(self, block_m: int, block_n: int) -> TileClassification:
        return _classified(self.cascade, self.problem, self.sizes, block_m, block_n)

    def tile_counts(self, block_m: int, block_n: int) -> TileCounts:
        return stacked_counts(self.classification(block_m, block_n))

    def key_tile_counts(self, block_m: int, block_n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per key tile of every copy (copy-major): the query tiles that visit it and how many
        of those need no mask; `key_copies` says how many copies."""
        found = self.classification(block_m, block_n)
        state = _per_copy(found)
        whole = found.kv_len // found.block_k
        visit = state != EMPTY
        full = state == FULL
        full[..., whole:] = False
        return visit.sum(axis=1).reshape(-1).astype(np.int64), full.sum(axis=1).reshape(-1).astype(np.int64)

    def key_copies(self, block_m: int, block_n: int) -> int:
        return _per_copy(self.classification(block_m, block_n)).shape[0]

    def heads_axis(self, block_m: int, block_n: int) -> int | None:
        """Where the query head (H) is among the copies' ranks (None: the same for every head)."""
        batch = self.classification(block_m, block_n).batch
        return batch.index("H") if "H" in batch else None


@lru_cache(maxsize=64)
def _classified(cascade: Any, problem: Any, sizes: tuple, block_m: int, block_n: int) -> TileClassification:
    bound = dict(sizes)
    values = filter_values(cascade, bound, problem.filter_inputs, causal=problem.causal)
    return classify_tiles(cascade, bound, block_m, block_n, values, problem=problem)


def _per_copy(found: TileClassification) -> np.ndarray:
    """The state as [copies, query tiles, key tiles]."""
    return found.state.reshape((-1,) + found.state.shape[-2:])


def stacked_counts(found: TileClassification) -> TileCounts:
    """TileCounts of every copy's query tiles, one after another (copies = batch positions the
    filters read: B for documents, B x H for a block mask). A visit's last key is the end of its
    last visited tile (the rows' own last keys would need the data point by point)."""
    state = _per_copy(found)
    copies, q_tiles, k_tiles = state.shape
    visit = state != EMPTY
    whole = found.kv_len // found.block_k
    visited = visit.sum(axis=2)
    full = (state[..., :whole] == FULL).sum(axis=2)
    seen = visit.any(axis=2)
    first = np.where(seen, np.argmax(visit, axis=2), 0)
    end = np.where(seen, k_tiles - np.argmax(visit[..., ::-1], axis=2), 0)
    first_key = first * found.block_k
    last_key = np.where(seen, np.minimum(end * found.block_k, found.kv_len) - 1, first_key - 1)
    tiles = np.arange(q_tiles)
    rows = np.minimum(found.block_q, found.q_len - tiles * found.block_q).astype(np.float64)
    key_seen = visit.any(axis=1)  # [copies, key tiles]: read by some query tile of the copy
    any_key = key_seen.any(axis=0)
    kv_lo = int(np.argmax(any_key)) * found.block_k if any_key.any() else 0
    kv_hi = min(found.kv_len, (k_tiles - int(np.argmax(any_key[::-1]))) * found.block_k) if any_key.any() else 0
    return TileCounts(block_m=found.block_q, block_n=found.block_k, rows=np.tile(rows, copies),
                      visited=visited.reshape(-1).astype(np.int64), full=full.reshape(-1).astype(np.int64),
                      first_key=first_key.reshape(-1).astype(np.int64), last_key=last_key.reshape(-1).astype(np.int64),
                      exact_pairs=found.visible_pairs / copies, kv_lo=kv_lo, kv_hi=kv_hi, copies=copies,
                      kv_seen=float(key_seen.mean()) if key_seen.size else 0.0)


def lane_ops_per_pair(cascade: Any) -> float:
    """Lane operations the block mask's build spends on each (query, key) pair: one per
    comparison, arithmetic and logical node of the filters (tensor reads are per row or per
    column, loads), plus the bounds check and the two reductions (any, all) of the tile."""
    ops = 0
    for flt in cascade.filters:
        for condition in flt.conditions:
            ops += sum(isinstance(node, (Compare, Logical, Not, Binary, Unary)) for node in walk(condition)
                       if not isinstance(node, Access))
        ops += max(0, len(flt.conditions) - 1)  # the and between a filter's terms
    return float(ops + 4)


def filter_tensor_bytes(cascade: Any, problem: Any, sizes: dict[str, int]) -> float:
    """Bytes of the tensors the filters read, at the given arrays' element size (4 bytes —
    int32 ids — for those a description fills)."""
    total = 0.0
    inputs = problem.filter_inputs
    for flt in cascade.filters:
        for name, ranks in flt.tensor_ranks.items():
            itemsize = inputs.values(name).itemsize if inputs is not None and name in inputs.names else 4
            total += float(math.prod(sizes[r] for r in ranks)) * itemsize
    return total


def build_launches(mask: DataMask, block_m: int, block_n: int, vector_ops_per_pair: float,
                   lists: int = 1) -> tuple[Launch, ...]:
    """The per-call block mask build of a compiled cascade whose mask reads data (kernels/compiler
    launch.tile_lists): one program per (query tile, key tile, copy) evaluating the element mask
    on every pair of its tile (`vector_ops_per_pair` lane ops each) and reading the filter
    tensors' rows and columns, then the torch kernels that sort the classes into tile lists,
    `lists` times (the forward needs one set; a backward two more)."""
    found = mask.classification(block_m, block_n)
    copies, q_tiles, k_tiles = _per_copy(found).shape
    pairs = float(block_m * block_n)
    tile = TileWork(fma_ops=pairs * vector_ops_per_pair, load_bytes=(block_m + block_n) * 4.0)
    group = ProgramGroup(np.ones(1), np.zeros(1), copies * q_tiles * k_tiles, tile, tile, TileWork(), "block mask")
    classes = 2.0 * copies * q_tiles * k_tiles  # any, full: int8 each
    filter_bytes = filter_tensor_bytes(mask.cascade, mask.problem, dict(mask.sizes))
    list_bytes = 2.0 * copies * q_tiles * 2 * (1 + k_tiles) * 4  # two sets (partial, full) of int32 lists
    launches = []
    for _ in range(lists):
        launches.append(Launch("block mask: tile classes", (group,), classes + filter_bytes,
                               programs_per_sm=CLASS_PROGRAMS_PER_SM))
        launches.append(Launch("block mask: tile lists", (), 4 * classes + list_bytes, memory_only=True,
                               kernels=LIST_KERNELS))
    return tuple(launches)
