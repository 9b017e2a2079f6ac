"""Rank sizes and iteration spaces: binding size symbols, partitioned ranks (m = m1*M0 + m0, with
tail tiles), the coordinates of every point and how a tensor access indexes its tensor."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from einsim.errors import ShapeError, SpecError
from einsim.einsum_cascades.expr import Access, Expr, evaluate_scalar


def index_var(rank: str) -> str:
    """The index variable of a rank: M1 -> m1."""
    return rank.lower()


@dataclass(frozen=True)
class Space:
    """The rank declarations of one cascade, shared by its Einsums.

    `sizes` maps each rank to an int, a symbol or a size expression (`ceil(M/M0)`, `H/G`);
    `partitions` maps a rank to its parts, outermost first (m = m1*M0 + m0).
    """

    name: str
    sizes: Mapping[str, int | str]
    partitions: Mapping[str, tuple[str, ...]]
    symbols: Mapping[str, int]  # default values of size symbols
    size_exprs: Mapping[str, Expr] = field(default_factory=dict, repr=False, compare=False)
    _counts: dict = field(default_factory=dict, repr=False, compare=False)  # counting.count_points memo

    # --- binding ----------------------------------------------------------------------------
    def bind(self, given: Mapping[str, int] | None = None) -> dict[str, int]:
        """Every rank and symbol as an int. Rank names in `given` override their declaration."""
        given = dict(given or {})
        resolved: dict[str, int] = {}

        def value_of(name: str, stack: tuple[str, ...]) -> int:
            if name in resolved:
                return resolved[name]
            if name in stack:
                raise SpecError(f"{self.name}: the sizes of {' -> '.join(stack + (name,))} depend on each other")
            if name in given:
                value = given[name]
            elif isinstance(self.sizes.get(name), int):
                value = self.sizes[name]
            elif name in self.size_exprs:
                raw = evaluate_scalar(self.size_exprs[name], lambda n: value_of(n, stack + (name,)))
                if abs(raw - round(raw)) > 1e-9:
                    raise ShapeError(
                        f"{self.name}: rank {name} = {self.sizes[name]} = {raw:g} is not a whole number"
                    )
                value = int(round(raw))
            elif name in self.symbols:
                value = self.symbols[name]
            else:
                needed = f"rank {name}" if name in self.sizes else f"symbol {name!r}"
                raise ShapeError(f"{self.name}: no size for {needed}; pass it, e.g. sizes={{{name!r}: 1024}}")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
                    or not math.isfinite(value):
                raise ShapeError(f"{self.name}: {name} must be a number, got {value!r}")
            if float(value).is_integer():
                value = int(value)
            elif name in self.sizes:
                raise ShapeError(f"{self.name}: size of {name} must be an integer, got {value!r}")
            # a symbol that sizes no rank may be any number: a soft-cap, a temperature
            if name in self.sizes and value <= 0:
                raise ShapeError(f"{self.name}: rank {name} must have a positive size, got {value}")
            resolved[name] = value
            return resolved[name]

        for rank in self.sizes:
            value_of(rank, ())
        for symbol in self.symbols:
            value_of(symbol, ())
        for key, value in given.items():
            resolved.setdefault(key, value)
        for parent, parts in self.partitions.items():
            if math.prod(resolved[p] for p in parts) < resolved[parent]:
                raise ShapeError(
                    f"{self.name}: partition {parent} -> {' x '.join(parts)} covers only "
                    f"{' x '.join(str(resolved[p]) for p in parts)} of {parent} = {resolved[parent]}"
                )
        return resolved

    def bound(self, sizes: Mapping[str, int]) -> Mapping[str, int]:
        """`sizes` if it already holds every rank (the output of bind), else bind(sizes)."""
        if all(rank in sizes for rank in self.sizes):
            return sizes
        return self.bind(sizes)

    # --- partitions -------------------------------------------------------------------------
    def parent(self, rank: str) -> str | None:
        for parent, parts in self.partitions.items():
            if rank in parts:
                return parent
        return None

    def root(self, rank: str) -> str:
        while (parent := self.parent(rank)) is not None:
            rank = parent
        return rank

    def family(self, rank: str) -> set[str]:
        """A rank and every rank it is partitioned into, recursively."""
        found = {rank}
        for part in self.partitions.get(rank, ()):
            found |= self.family(part)
        return found

    def expansions(self, rank: str) -> list[tuple[str, ...]]:
        """The ways an access may spell a rank: M, (M1, M0), and deeper splits."""
        options = [(rank,)]
        parts = self.partitions.get(rank)
        if parts:
            combos: list[tuple[str, ...]] = [()]
            for part in parts:
                combos = [c + e for c in combos for e in self.expansions(part)]
            options += combos
        return options

    def strides(self, parent: str, sizes: Mapping[str, int]) -> dict[str, int]:
        parts = self.partitions[parent]
        strides, stride = {}, 1
        for part in reversed(parts):
            strides[part] = stride
            stride *= sizes[part]
        return strides

    def determined(self, ranks: set[str]) -> set[str]:
        """Ranks whose coordinate is fixed by iterating `ranks`: themselves plus every parent
        all of whose parts are fixed (M is fixed by M1 and M0)."""
        fixed = set(ranks)
        changed = True
        while changed:
            changed = False
            for parent, parts in self.partitions.items():
                if parent not in fixed and all(p in fixed for p in parts):
                    fixed.add(parent)
                    changed = True
        return fixed

    def derivable(self, ranks: set[str]) -> set[str]:
        """Ranks whose coordinate follows from iterating `ranks`: the determined ones plus every
        part of a known parent (p1 = p // P0 when the Einsum iterates p)."""
        known = self.determined(ranks)
        changed = True
        while changed:
            changed = False
            for parent, parts in self.partitions.items():
                if parent in known and not all(p in known for p in parts):
                    known |= set(parts)
                    changed = True
        return known

    def _derive(self, known: dict, sizes: Mapping[str, int], parent_of, part_of) -> dict:
        """Close `known` (rank -> value) under the partitions: a parent from all its parts
        (`parent_of(parts' values, strides)`), then the missing parts of a known parent
        (`part_of(parent's value, stride, part size, outermost?)`)."""
        changed = True
        while changed:
            changed = False
            for parent, parts in self.partitions.items():
                if parent not in known and all(p in known for p in parts):
                    strides = self.strides(parent, sizes)
                    known[parent] = parent_of([known[p] for p in parts], [strides[p] for p in parts])
                    changed = True
        changed = True
        while changed:
            changed = False
            for parent, parts in self.partitions.items():
                if parent in known and not all(p in known for p in parts):
                    strides = self.strides(parent, sizes)
                    for i, part in enumerate(parts):
                        if part not in known:
                            known[part] = part_of(known[parent], strides[part], sizes[part], i == 0)
                    changed = True
        return known

    def coordinates(self, axes: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> tuple[dict, np.ndarray | bool]:
        """Coordinates of every derivable rank, from the iterated ones (m = m1*M0 + m0; p1 = p //
        P0, p0 = p % P0), and the mask of points that are real positions (a tail tile's
        m = m1*M0 + m0 may reach past M)."""
        coords = self._derive(
            dict(axes), sizes,
            lambda values, strides: sum(v * s for v, s in zip(values, strides)),
            lambda value, stride, extent, outermost: value // stride if outermost else (value // stride) % extent,
        )
        valid: np.ndarray | bool = True
        for parent, parts in self.partitions.items():
            # a parent built from its parts may overshoot (tail tiles); one split from a known
            # parent never does
            if parent not in axes and parent in coords and math.prod(sizes[p] for p in parts) != sizes[parent]:
                valid = valid & (coords[parent] < sizes[parent])
        return coords, valid

    def coordinate_bounds(self, box: Mapping[str, tuple], sizes: Mapping[str, int]) -> dict[str, tuple]:
        """The (low, high) of every derivable rank's coordinate over boxes of the given ranks'
        coordinates (inclusive bounds, numpy arrays): the interval twin of `coordinates`."""

        def part_of(bounds, stride, extent, outermost):
            q_lo, q_hi = np.floor_divide(bounds[0], stride), np.floor_divide(bounds[1], stride)
            if outermost:
                return q_lo, q_hi
            wraps = (q_hi - q_lo + 1 >= extent) | (np.mod(q_lo, extent) > np.mod(q_hi, extent))
            return np.where(wraps, 0.0, np.mod(q_lo, extent)), np.where(wraps, extent - 1.0, np.mod(q_hi, extent))

        return self._derive(
            {rank: (np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)) for rank, (lo, hi) in box.items()},
            sizes,
            lambda values, strides: (sum(v[0] * s for v, s in zip(values, strides)),
                                     sum(v[1] * s for v, s in zip(values, strides))),
            part_of,
        )


@dataclass(frozen=True)
class AxisRead:
    """How one axis of a stored tensor is indexed by an access.

    kind "coord": the coordinate of rank `source` (iterated, or derived: m from m1 and m0),
    plus `offset`; "part": the coordinate of partition part `rank` taken from the coordinate of
    `source` (p1 from p); "const": the integer `value`; "final": the last state of an iterative
    tensor along `rank`.
    """

    rank: str
    kind: str
    source: str = ""
    offset: int = 0
    value: int = 0


def resolve_access(space: Space, declared: tuple[str, ...], access: Access, where: str = "") -> tuple[AxisRead, ...]:
    """Match an access against its tensor's ranks, allowing a partitioned spelling either way:
    K[e,m1,m0] for K declared [E, M], and OI[f,p] for OI declared [F, P1, P0]."""
    reads: list[AxisRead] = []
    indices = access.indices
    d_pos = i_pos = 0
    prefix = f"{where}: " if where else ""
    while d_pos < len(declared):
        rank = declared[d_pos]
        if i_pos >= len(indices):
            raise SpecError(f"{prefix}{access} has too few indices: {access.tensor} has ranks [{', '.join(declared)}]")
        index = indices[i_pos]
        if index.kind == "const":
            reads.append(AxisRead(rank, "const", value=index.value))
            d_pos, i_pos = d_pos + 1, i_pos + 1
            continue
        if index.kind == "final":
            if index.name != rank:
                raise SpecError(f"{prefix}{access}: position {i_pos + 1} of {access.tensor} is rank {rank}, not {index.name}")
            reads.append(AxisRead(rank, "final"))
            d_pos, i_pos = d_pos + 1, i_pos + 1
            continue
        source = index.name.upper()
        if source not in space.sizes:
            raise SpecError(f"{prefix}index {index.name} names no rank; declared ranks: {', '.join(space.sizes)}")
        if source == rank:
            reads.append(AxisRead(rank, "coord", source=rank, offset=index.offset))
            d_pos, i_pos = d_pos + 1, i_pos + 1
            continue
        matched = False
        for spelling in space.expansions(rank)[1:]:  # K[e,m1,m0] for K[E,M]
            window = indices[i_pos:i_pos + len(spelling)]
            if len(window) == len(spelling) and all(
                i.kind == "var" and not i.offset and i.name.upper() == r for i, r in zip(window, spelling)
            ):
                reads.append(AxisRead(rank, "coord", source=rank))
                d_pos, i_pos, matched = d_pos + 1, i_pos + len(spelling), True
                break
        if not matched and not index.offset:
            for spelling in space.expansions(source)[1:]:  # OI[f,p] for OI[F,P1,P0]
                if tuple(declared[d_pos:d_pos + len(spelling)]) == spelling:
                    reads += [AxisRead(part, "part", source=source) for part in spelling]
                    d_pos, i_pos, matched = d_pos + len(spelling), i_pos + 1, True
                    break
        if not matched:
            spelled = " or ".join("[" + ",".join(index_var(r) for r in s) + "]" for s in space.expansions(rank))
            raise SpecError(
                f"{prefix}{access}: position {i_pos + 1} of {access.tensor} is rank {rank} (spelled {spelled}), "
                f"but index {index} ranges over {source}"
            )
    if i_pos != len(indices):
        raise SpecError(f"{prefix}{access} has too many indices: {access.tensor} has ranks [{', '.join(declared)}]")
    return tuple(reads)


def gather(array: np.ndarray, reads: tuple[AxisRead, ...], coords: Mapping[str, np.ndarray]) -> np.ndarray:
    """The elements of `array` that an access (resolved into `reads`) reads at the points whose
    coordinates are `coords` (Space.coordinates gives parts and parents). Positions past an
    axis's end (a tail tile's masked points) are clipped, so the read itself is legal."""
    index = []
    for axis, read in enumerate(reads):
        extent = array.shape[axis]
        if read.kind == "const":
            position = read.value
        elif read.kind == "final":
            position = extent - 1
        elif read.kind == "coord":
            position = coords[read.source] + read.offset
        else:  # part of a partitioned coordinate, e.g. p1 from p
            position = coords[read.rank]
        index.append(np.clip(position, 0, extent - 1))
    return array[tuple(index)]
