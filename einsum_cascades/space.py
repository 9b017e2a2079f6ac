"""Rank sizes and iteration spaces: binding size symbols, partitioned ranks (m = m1*M0 + m0, with
tail tiles), coordinate filters, and exact counts of the points an Einsum iterates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from einsim.errors import ShapeError, SpecError
from einsim.einsum_cascades.expr import Binary, Compare, Coordinate, Expr, Name, Number, Unary, evaluate_scalar
from einsim.einsum_cascades.values import compare

# Above this many points a constraint group is not enumerated point by point.
_BRUTE_FORCE_POINTS = 1 << 22
_OUTER_POINTS = 1 << 27


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
    _counts: dict = field(default_factory=dict, repr=False, compare=False)  # count_points memo

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
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ShapeError(f"{self.name}: size of {name} must be an integer, got {value!r}")
            if name in self.sizes and value <= 0:
                raise ShapeError(f"{self.name}: rank {name} must have a positive size, got {value}")
            resolved[name] = int(value)
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

    def coordinates(self, axes: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> tuple[dict, np.ndarray | bool]:
        """Coordinates of every derivable rank, from the iterated ones, and the mask of points
        that are real positions (a tail tile's m = m1*M0 + m0 may reach past M)."""
        coords = dict(axes)
        valid: np.ndarray | bool = True
        changed = True
        while changed:
            changed = False
            for parent, parts in self.partitions.items():
                if parent in coords or not all(p in coords for p in parts):
                    continue
                strides = self.strides(parent, sizes)
                coords[parent] = sum(coords[p] * strides[p] for p in parts)
                if math.prod(sizes[p] for p in parts) != sizes[parent]:
                    valid = valid & (coords[parent] < sizes[parent])
                changed = True
        changed = True
        while changed:  # parts from their parent: p1 = p // P0, p0 = p % P0
            changed = False
            for parent, parts in self.partitions.items():
                if parent not in coords or all(p in coords for p in parts):
                    continue
                strides = self.strides(parent, sizes)
                for i, part in enumerate(parts):
                    if part not in coords:
                        value = coords[parent] // strides[part]
                        coords[part] = value % sizes[part] if i else value
                changed = True
        return coords, valid

    # --- counting ---------------------------------------------------------------------------
    def count_points(self, ranks: tuple[str, ...], filters, sizes: Mapping[str, int]) -> int:
        """Exact number of real, unfiltered points of the iteration space over `ranks`."""
        sizes = self.bound(sizes)
        key = (tuple(ranks), tuple(filters), tuple(sorted(sizes.items())))
        if key not in self._counts:
            self._counts[key] = self._count_points(tuple(ranks), tuple(filters), sizes)
        return self._counts[key]

    def _count_points(self, ranks: tuple[str, ...], filters, sizes: Mapping[str, int]) -> int:
        filter_ranks = {r for f in filters for r in f.ranks}
        # Collapse a fully iterated split (m1, m0) into its parent m unless a filter names a
        # part: the real points of (m1, m0) are exactly the positions of m.
        current = set(ranks)
        changed = True
        while changed:
            changed = False
            for parent, parts in self.partitions.items():
                if parent not in current and all(p in current for p in parts) and not (set(parts) & filter_ranks):
                    current = (current - set(parts)) | {parent}
                    changed = True
        constrained_parents = [
            parent for parent, parts in self.partitions.items()
            if all(p in self.determined(current) for p in parts) and parent not in current
            and math.prod(sizes[p] for p in parts) != sizes[parent]
        ]
        # group the ranks that constraints tie together
        groups: list[set[str]] = []
        constraints: list[tuple[set[str], object]] = []
        for parent in constrained_parents:
            constraints.append((self._leaves(parent, current), ("valid", parent)))
        for flt in filters:
            touched = set()
            for rank in flt.ranks:
                touched |= self._leaves(rank, current) if rank not in current else {rank}
            constraints.append((touched, ("filter", flt)))
        for touched, _ in constraints:
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
            members = [c for t, c in constraints if t <= group]
            total *= self._count_group(sorted(group), members, sizes, current)
        return int(total)

    def _leaves(self, rank: str, current: set[str]) -> set[str]:
        if rank in current:
            return {rank}
        found = set()
        for part in self.partitions.get(rank, ()):
            found |= self._leaves(part, current)
        return found

    def _count_group(self, group: list[str], members, sizes: Mapping[str, int], current: set[str]) -> int:
        points = math.prod(sizes[r] for r in group)
        if points <= _BRUTE_FORCE_POINTS:
            grids = np.meshgrid(*[np.arange(sizes[r]) for r in group], indexing="ij", sparse=True)
            mask = self._mask(dict(zip(group, grids)), members, sizes)
            return int(np.broadcast_to(mask, [sizes[r] for r in group]).sum())
        # Too many points to enumerate: every constraint must be affine; enumerate all ranks but
        # the largest and count the largest's interval per outer point.
        inner = max(group, key=lambda r: sizes[r])
        outer = [r for r in group if r != inner]
        forms = []
        for member in members:
            forms += self._affine_constraints(member, sizes, current)
        outer_points = math.prod(sizes[r] for r in outer)
        if outer_points > _OUTER_POINTS:
            raise ShapeError(
                f"{self.name}: cannot count the points of ranks {', '.join(group)} exactly "
                f"({points:.3g} points); use smaller sizes"
            )
        total, chunk = 0, 1 << 22
        for start in range(0, outer_points, chunk):
            index = np.arange(start, min(start + chunk, outer_points), dtype=np.int64)
            coords = {}
            remainder = index
            for rank in reversed(outer):
                coords[rank] = remainder % sizes[rank]
                remainder = remainder // sizes[rank]
            lo = np.zeros(index.shape, dtype=np.int64)
            hi = np.full(index.shape, sizes[inner] - 1, dtype=np.int64)
            ok = np.ones(index.shape, dtype=bool)
            for coefs, const, op in forms:
                a = coefs.get(inner, 0)
                rest = const + sum((coefs.get(r, 0) * coords[r] for r in outer), np.zeros_like(index))
                if a == 0:
                    ok &= _compare(rest, op, 0)
                    continue
                if a < 0:
                    a, rest, op = -a, -rest, _FLIP[op]
                # a*x + rest (op) 0
                if op == "<=":
                    hi = np.minimum(hi, (-rest) // a)
                elif op == "<":
                    hi = np.minimum(hi, -((rest) // a) - 1)
                elif op == ">=":
                    lo = np.maximum(lo, -((rest) // a))
                elif op == ">":
                    lo = np.maximum(lo, (-rest) // a + 1)
                elif op == "==":
                    exact = (-rest) % a == 0
                    ok &= exact
                    lo = np.maximum(lo, (-rest) // a)
                    hi = np.minimum(hi, (-rest) // a)
                else:
                    raise ShapeError(f"{self.name}: cannot count '!=' filters at this size")
            total += int(np.where(ok, np.clip(hi - lo + 1, 0, None), 0).sum())
        return total

    def _mask(self, coords: dict, members, sizes: Mapping[str, int]):
        coords, _ = self.coordinates(coords, sizes)
        mask = True
        for member in members:
            kind, what = member
            if kind == "valid":
                mask = mask & (coords[what] < sizes[what])
            else:
                mask = mask & what.evaluate(coords, sizes)
        return mask

    def _affine_constraints(self, member, sizes, current):
        kind, what = member
        if kind == "valid":
            coefs = self._affine_rank(what, sizes, current)
            return [(coefs, -sizes[what], "<")]
        forms = []
        for condition in what.conditions:
            if not isinstance(condition, Compare):
                raise ShapeError(f"{self.name}: filter term {condition} is not an affine comparison; it cannot be counted at this size")
            left = self._affine(condition.left, sizes, current)
            right = self._affine(condition.right, sizes, current)
            coefs = dict(left[0])
            for rank, c in right[0].items():
                coefs[rank] = coefs.get(rank, 0) - c
            forms.append((coefs, left[1] - right[1], condition.op))
        return forms

    def _affine_rank(self, rank: str, sizes, current) -> dict[str, int]:
        if rank in current or rank not in self.partitions:
            return {rank: 1}
        coefs: dict[str, int] = {}
        strides = self.strides(rank, sizes)
        for part in self.partitions[rank]:
            for leaf, c in self._affine_rank(part, sizes, current).items():
                coefs[leaf] = coefs.get(leaf, 0) + c * strides[part]
        return coefs

    def _affine(self, expr: Expr, sizes, current) -> tuple[dict[str, int], int]:
        if isinstance(expr, Number):
            if not float(expr.value).is_integer():
                raise ShapeError(f"{self.name}: filter constant {expr} is not an integer")
            return {}, int(expr.value)
        if isinstance(expr, Coordinate):
            return self._affine_rank(expr.rank, sizes, current), 0
        if isinstance(expr, Name):
            return {}, int(sizes[expr.name])
        if isinstance(expr, Unary):
            coefs, const = self._affine(expr.operand, sizes, current)
            return {r: -c for r, c in coefs.items()}, -const
        if isinstance(expr, Binary):
            (a, ca), (b, cb) = self._affine(expr.left, sizes, current), self._affine(expr.right, sizes, current)
            if expr.op in "+-":
                sign = 1 if expr.op == "+" else -1
                coefs = dict(a)
                for rank, c in b.items():
                    coefs[rank] = coefs.get(rank, 0) + sign * c
                return coefs, ca + sign * cb
            if expr.op == "*" and (not a or not b):
                factor, (coefs, const) = (ca, (b, cb)) if not a else (cb, (a, ca))
                return {r: c * factor for r, c in coefs.items()}, const * factor
        raise ShapeError(f"{self.name}: filter term {expr} is not affine; it cannot be counted at this size")


_FLIP = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "==": "==", "!=": "!="}


def _compare(left, op: str, right):
    return compare(left, op, right)
