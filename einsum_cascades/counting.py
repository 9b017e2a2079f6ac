"""Exact counts of the points of an iteration space that exist (a tail tile's positions past M
do not) and pass an Einsum's filters: small groups of ranks point by point, large ones by
classifying tiles (tiles.py), so a 100 000 x 100 000 causal triangle takes a fraction of a second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from einsim.einsum_cascades.expr import Compare, Coordinate, Logical, Name
from einsim.einsum_cascades.space import Space
from einsim.einsum_cascades.tile_grid import TensorValues, choose_tiles, classify_grid
from einsim.einsum_cascades.values import holds
from einsim.errors import ShapeError

# Up to this many points a group of ranks is enumerated point by point.
_BRUTE_FORCE_POINTS = 1 << 22


def count_points(space: Space, ranks: tuple[str, ...], filters, sizes: Mapping[str, int],
                 tensors: Mapping[str, np.ndarray] | None = None) -> int:
    """Exact number of real, unfiltered points of the iteration space over `ranks`; `tensors`
    gives the values of inputs that filters read (DQ[b,p] == DK[b,m])."""
    sizes = space.bound(sizes)
    filters = tuple(filters)
    reading = [f for f in filters if f.tensors]
    if reading and tensors is None:
        names = ", ".join(dict.fromkeys(t for f in reading for t in f.tensors))
        raise ShapeError(
            f"{space.name}: the filter {reading[0].text!r} reads {names}: how many points it keeps depends on "
            "their values; pass them (tensors={...})"
        )
    if reading:
        return _count_points(space, tuple(ranks), filters, sizes, tensors)
    key = (tuple(ranks), filters, tuple(sorted(sizes.items())))
    if key not in space._counts:
        space._counts[key] = _count_points(space, tuple(ranks), filters, sizes, None)
    return space._counts[key]


def _count_points(space: Space, ranks, filters, sizes, tensors) -> int:
    filter_ranks = {r for f in filters for r in f.ranks}
    # Collapse a fully iterated split (m1, m0) into its parent m unless a filter names a part:
    # the real points of (m1, m0) are exactly the positions of m.
    current = set(ranks)
    changed = True
    while changed:
        changed = False
        for parent, parts in space.partitions.items():
            if parent not in current and all(p in current for p in parts) and not (set(parts) & filter_ranks):
                current = (current - set(parts)) | {parent}
                changed = True
    # constraints: a split whose parts overshoot the parent (tail tiles), and every filter
    constraints: list[tuple[set[str], object, object]] = []  # (ranks it ties, validity, filter)
    for parent, parts in space.partitions.items():
        if parent not in current and all(p in space.determined(current) for p in parts) \
                and math.prod(sizes[p] for p in parts) != sizes[parent]:
            constraints.append((_sources(space, parent, current), Compare("<", Coordinate(parent), Name(parent)), None))
    for flt in filters:
        touched: set[str] = set()
        for rank in flt.ranks:
            touched |= _sources(space, rank, current)
        constraints.append((touched, None, flt))
    groups: list[set[str]] = []
    for touched, _, _ in constraints:
        merged = set(touched)
        for group in [g for g in groups if g & merged]:
            merged |= group
            groups.remove(group)
        groups.append(merged)
    total = 1
    free = current - set().union(*groups) if groups else current
    for rank in free:
        total *= sizes[rank]
    for group in groups:
        members = [(v, f) for t, v, f in constraints if t <= group]
        if tensors is not None:
            total *= _count_group(space, sorted(group), members, sizes, tensors)
            continue
        # Einsums of one cascade share groups (QK, LM, SLN and SLNV all count the causal
        # triangle): count each group once per sizes
        key = ("group", tuple(sorted(group)), tuple(members), tuple(sorted(sizes.items())))
        if key not in space._counts:
            space._counts[key] = _count_group(space, sorted(group), members, sizes, None)
        total *= space._counts[key]
    return int(total)


def _sources(space: Space, rank: str, current: set[str], seen: frozenset = frozenset()) -> set[str]:
    """The iterated ranks a rank's coordinate is computed from: itself, its parts (m from m1 and
    m0), or its parent's sources (p1 from p)."""
    if rank in current:
        return {rank}
    if rank in seen:
        return set()
    seen = seen | {rank}
    parts = space.partitions.get(rank, ())
    if parts and all(p in space.derivable(current) for p in parts):
        found: set[str] = set()
        for part in parts:
            found |= _sources(space, part, current, seen)
        if found:
            return found
    parent = space.parent(rank)
    return _sources(space, parent, current, seen) if parent is not None else set()


def _count_group(space: Space, group: list[str], members, sizes, tensors) -> int:
    validity = [v for v, _ in members if v is not None]
    filters = [f for _, f in members if f is not None]
    valid = _conjunction(validity)
    condition = _conjunction([f.condition for f in filters])
    values = None
    declared = {name: ranks for f in filters for name, ranks in f.tensor_ranks.items()}
    if declared:
        values = TensorValues(space, declared, tensors, sizes)
    points = math.prod(sizes[r] for r in group)
    if points <= _BRUTE_FORCE_POINTS:
        grids = np.meshgrid(*[np.arange(sizes[r]) for r in group], indexing="ij", sparse=True)
        coords, _ = space.coordinates(dict(zip(group, grids)), sizes)
        mask = np.ones([sizes[r] for r in group], dtype=bool)
        if valid is not None:
            mask = mask & holds(valid, coords, sizes)
        if condition is not None:
            mask = mask & holds(condition, coords, sizes, values.reader(coords) if values else None)
        return int(np.broadcast_to(mask, [sizes[r] for r in group]).sum())
    tiles = choose_tiles(group, sizes)
    return classify_grid(condition, space, sizes, tiles, values, valid=valid).points


def _conjunction(conditions):
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else Logical("and", tuple(conditions))
