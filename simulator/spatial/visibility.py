"""Which (query tile x key tile) tiles hold a point the hardware must compute, under the problem's
causal or window mask and the cascade's own filters (docs/simulator.md §3.1, §5.1-5.2, §5.6): the
tiles a mask or filter empties cost no operations, no K/V traffic and no live state.

A spatial design computes whole visited tiles (an M0 x P0 epoch is one array's worth), so the
fraction of visited tiles scales every Einsum on the key x query plane, the K/V tiles a query
block reads, and the rows of QK a block keeps live. The cascade's filters are classified by the
notation's exact tile classification (einsum_cascades.tiles, shared with the compiler and the GPU
model); the problem's mask is a condition like any filter, and-ed with them. Filters that read
input values (packed documents' ids, a block mask) are classified from the values the problem
carries (Problem.filter_inputs, arrays or a statistical description); their tiles then differ
per batch element or head, and every share below is the copies' mean (the live share their most).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from einsim.einsum_cascades.expr import Access, Logical, walk
from einsim.einsum_cascades.filter_values import filter_tensors, filter_values
from einsim.einsum_cascades.tile_grid import EMPTY, TensorValues, classify_grid
from einsim.einsum_cascades.tiles import mask_condition


@dataclass(frozen=True)
class Visibility:
    """`visited[c, q, k]`: whether query tile q (of `query_tile` rows) and key tile k (of
    `key_tile` keys) of copy c hold a point to compute (one copy unless the filters read values
    that differ per batch element or head); `note` says where it came from."""

    visited: np.ndarray  # bool [copies, query tiles, key tiles]
    query_tile: int
    key_tile: int
    note: str = ""
    _blocks: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def fraction(self) -> float:
        """Visited tiles over all tiles: the share of the plane's work the hardware does."""
        return float(self.visited.mean()) if self.visited.size else 0.0

    @property
    def live_fraction(self) -> float:
        """The most key tiles one query tile visits, over all key tiles: the share of a row of QK
        a block keeps live."""
        return float(self.visited.sum(axis=2).max() / self.visited.shape[2]) if self.visited.size else 0.0

    @property
    def key_share(self) -> float:
        """The mean share of a copy's key tiles that some query tile visits (the K/V it reads)."""
        return float(self.visited.any(axis=1).mean()) if self.visited.size else 0.0

    def block_fraction(self, rows) -> np.ndarray:
        """Per block size (query rows): the mean share of the key tiles one block reads (the
        union of its query tiles' visited key tiles)."""
        return np.vectorize(self._per_block, otypes=[float])(np.asarray(rows, dtype=float))

    def _per_block(self, rows: float) -> float:
        rows = max(1.0, float(rows))
        if rows not in self._blocks:
            tiles = max(1, math.ceil(rows / self.query_tile))
            copies, count, keys = self.visited.shape
            groups = math.ceil(count / tiles)
            padded = np.zeros((copies, groups * tiles, keys), dtype=bool)
            padded[:, :count] = self.visited
            seen = padded.reshape(copies, groups, tiles, keys).any(axis=2).sum(axis=2) / keys
            self._blocks[rows] = float(seen.mean())
        return self._blocks[rows]


def plane_condition(cascade, key_ranks: set[str], query_ranks: set[str], keep_reads: bool = False):
    """What the filters of the Einsums on the key x query plane keep: a point is computed if any
    of them keeps it (each Einsum's own `where` and the cascade's filters, and-ed); None when one
    of them keeps every point. An and-term that reads tensor values (document ids, a block mask)
    is kept when `keep_reads` (the values are given); otherwise it is dropped, which can only
    keep more (packed documents keep their causal term)."""
    alternatives = []
    for einsum in cascade.einsums:
        ranks = set(einsum.iteration_ranks)
        if not (ranks & key_ranks and ranks & query_ranks):
            continue
        conditions = tuple(term for f in einsum.filters for term in f.conditions
                           if keep_reads or not any(isinstance(node, Access) for node in walk(term)))
        if not conditions:
            return None
        alternatives.append(conditions[0] if len(conditions) == 1 else Logical("and", conditions))
    if not alternatives:
        return None
    unique = tuple(dict.fromkeys(alternatives))
    return unique[0] if len(unique) == 1 else Logical("or", unique)


def reads_tensors(cascade, key_ranks: set[str], query_ranks: set[str]) -> tuple[str, ...]:
    """Input tensors the plane's filters read (their tiles depend on data)."""
    found = []
    for einsum in cascade.einsums:
        ranks = set(einsum.iteration_ranks)
        if ranks & key_ranks and ranks & query_ranks:
            found += [t for f in einsum.filters for t in f.tensors]
    return tuple(dict.fromkeys(found))


def visibility(cascade, problem, sizes, key_tile: int, query_tile: int, key: str = "M", query: str = "P",
               element_key_ranks: set[str] | None = None, query_ranks: set[str] | None = None,
               data_sizes=None) -> Visibility | None:
    """The visited tiles of a design, or None when every tile is visited (no mask, no filter).
    `data_sizes`: the sizes the filter tensors' values are laid out at (the cascade's own
    partitions, e.g. a block mask's blocks; default `sizes`)."""
    key_ranks = element_key_ranks or {key}
    query_ranks = query_ranks or {query}
    if key not in sizes or query not in sizes:
        return None
    reads = bool(reads_tensors(cascade, key_ranks, query_ranks)) and problem.filter_inputs is not None
    plane = plane_condition(cascade, key_ranks, query_ranks, keep_reads=reads)
    conditions = [c for c in (mask_condition(problem, key, query), plane) if c is not None]
    if not conditions:
        return None
    condition = conditions[0] if len(conditions) == 1 else Logical("and", tuple(conditions))
    tiles, values = {query: query_tile, key: key_tile}, None
    if reads and any(isinstance(node, Access) for node in walk(condition)):
        sizes = data_sizes or sizes
        declared = filter_tensors(cascade)
        arrays = filter_values(cascade, sizes, problem.filter_inputs, causal=problem.causal, query=query, key=key)
        values = TensorValues(cascade.space, declared, arrays, sizes)
        families = cascade.space.family(query) | cascade.space.family(key)
        batch = dict.fromkeys(cascade.space.root(r) for ranks in declared.values() for r in ranks
                              if r not in families and cascade.space.root(r) not in families)
        tiles = {**{rank: 1 for rank in batch}, **tiles}
    grid = classify_grid(condition, cascade.space, sizes, tiles, values)
    visited = (grid.state != EMPTY).reshape((-1,) + grid.state.shape[-2:])
    note = f"tiles visited: {float(visited.mean()):.1%} of {query_tile} x {key_tile} (mask and filters)"
    return Visibility(visited, query_tile, key_tile, note)
