"""The cascade IR: tensors with named ranks, Einsums (a map, an optional reduction, filters,
an iterative rank) and the Cascade that orders them; frozen dataclasses built by the loader."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from einsim.einsum_cascades.expr import (
    Access, Binary, Call, Compare, Condition, Coordinate, Expr, Index, Logical, Name, Not, Unary, conjuncts, walk,
)
from einsim.einsum_cascades.counting import count_points
from einsim.einsum_cascades.tile_grid import EMPTY, classify_grid
from einsim.einsum_cascades.space import AxisRead, Space, index_var, resolve_access  # noqa: F401 (re-exported)
from einsim.einsum_cascades.values import Reader, holds
from einsim.errors import SpecError

# The operation a map node counts as (Einsum.operation_counts); relu is max(x, 0), where(c, a, b)
# a select, every comparison a "cmp"; other functions count under their own name.
_BINARY_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
_CALL_OPS = {"exp": "exp", "max": "max", "min": "min", "relu": "max", "where": "select"}
_REDUCE_OPS = {"sum": "add", "max": "max", "min": "min"}
# An operation reading some of the ranks a filter reads counts the points of its own ranks that
# a kept point projects to, found by bounds over one tile per such point, up to this many tiles.
_PROJECTION_TILES = 1 << 20


@dataclass(frozen=True)
class Filter:
    """A condition on the points of an iteration space: comparisons of coordinates, sizes and
    input tensors' values joined by and / or / not, e.g. `m <= p + M - P` (causal, bottom-right)
    or `DQ[b,p] == DK[b,m]` (packed documents)."""

    text: str
    condition: Condition
    ranks: tuple[str, ...]  # ranks whose coordinates it reads, in comparisons or tensor indices
    line: int = 0
    tensors: tuple[str, ...] = ()  # input tensors it reads
    declared: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (tensor, its declared ranks) per tensor read

    @property
    def tensor_ranks(self) -> dict[str, tuple[str, ...]]:
        """Each tensor it reads -> its declared ranks."""
        return dict(self.declared)

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The top-level `and` terms."""
        return conjuncts(self.condition)

    @property
    def accesses(self) -> tuple[Access, ...]:
        return tuple(node for node in walk(self.condition) if isinstance(node, Access))

    def evaluate(self, coords, sizes, read: Reader | None = None):
        """Where the filter keeps a point; `read` gathers the tensors it reads."""
        if self.tensors and read is None:
            raise SpecError(f"filter {self.text!r} reads {', '.join(self.tensors)}: its points depend on their values; pass them")
        return holds(self.condition, coords, sizes, read)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Einsum:
    """One line of a cascade: `output[output_indices] = reduce(reduced_ranks) map(operands)`."""

    output: str
    output_ranks: tuple[str, ...]  # rank names of the output, in order (M1 for RM[m1+1,p])
    output_indices: tuple[Index, ...]
    expression: Expr  # the map, without the reduction
    operands: tuple[Access, ...]  # every tensor access of the map, in reading order
    map_ops: tuple[str, ...]  # one entry per map operation applied at each point
    reduce_op: str | None  # "sum", "max", "min" or None
    reduced_ranks: tuple[str, ...]
    iteration_ranks: tuple[str, ...]  # output ranks, then reduced ranks
    filters: tuple[Filter, ...]  # its own `where` conditions plus the cascade's that apply
    iterative_rank: str | None  # M1 when the output is written at [m1+1]
    init: float | None  # the iterative output's value at [0]
    text: str
    line: int
    source: str = "<string>"
    space: Space = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @property
    def operand_tensors(self) -> tuple[str, ...]:
        """Distinct tensors read, in first-read order."""
        return tuple(dict.fromkeys(a.tensor for a in self.operands))

    @property
    def filter_operands(self) -> tuple[Access, ...]:
        """Tensor accesses of its filters (input tensors such as DQ[b,p] or BLOCKS[b,h,p1,m1])."""
        return tuple(a for f in self.filters for a in f.accesses)

    @property
    def read_tensors(self) -> tuple[str, ...]:
        """Distinct tensors read by the map or the filters, in first-read order."""
        return tuple(dict.fromkeys(a.tensor for a in self.operands + self.filter_operands))

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(index_var(r) for r in self.iteration_ranks)

    def iteration_points(self, sizes: Mapping[str, int], tensors: Mapping | None = None) -> int:
        """Points of the iteration space that are real positions and pass every filter; a filter
        that reads tensors (DQ[b,p] == DK[b,m]) needs their values in `tensors`."""
        return count_points(self.space, self.iteration_ranks, self.filters, sizes, tensors)

    def operation_counts(self, sizes: Mapping[str, int], tensors: Mapping | None = None) -> dict[str, int]:
        """Operations by kind (mul, add, sub, div, exp, max, ...), counted after filters and by
        dependence (`operation_ranks`): an operation whose operands read only some of the
        iteration ranks is counted once per point of those ranks (`exp(-SLOPE[h])` H times, not
        at every (m, e, f) point of every head); the others once per point.

        Each point applies the reduction once (sum: "add", max: "max"), so Q[e,p]*K[e,m] summed
        over e counts E*M*P adds, not (E-1)*M*P: accumulation starts from the identity.
        """
        points = self.iteration_points(sizes, tensors)
        counts: Counter[str] = Counter()
        for kind, ranks in self.operation_ranks():
            counts[kind] += self._points_over(ranks, points, sizes, tensors)
        if self.reduce_op is not None:
            counts[_REDUCE_OPS[self.reduce_op]] += points
        return dict(counts)

    def operation_ranks(self) -> tuple[tuple[str, frozenset[str]], ...]:
        """Every map operation with the iteration ranks its operands depend on: the index
        variables of the accesses beneath it and the ranks of the coordinates it reads (a
        constant part, `M - P`, is no operation at all: map_operations)."""
        variables = {index_var(rank): rank for rank in self.iteration_ranks}
        return map_operation_ranks(self.expression, variables, self.space, self.iteration_ranks)

    def _points_over(self, ranks: frozenset[str], points: int, sizes: Mapping[str, int],
                     tensors: Mapping | None) -> int:
        """How many times an operation depending on `ranks` runs: at every point when it reads
        every iteration rank; else once per point of its ranks (each such point is needed when
        the filters read none of them; otherwise the points of its ranks and the filters', an
        upper bound, and never more than the Einsum's points)."""
        if not points or ranks >= set(self.iteration_ranks):
            return points
        bound = self.space.bound(sizes)
        filter_ranks = {r for f in self.filters for r in f.ranks}
        related = {r for r in self.iteration_ranks
                   if any(self.space.root(r) == self.space.root(f) for f in filter_ranks)}
        free = math.prod(bound[r] for r in ranks - related)  # ranks no filter reads: all needed
        own = ranks & related
        if not own:
            return int(free)
        over = tuple(r for r in self.iteration_ranks if r in related)
        filtered = count_points(self.space, over, self.filters, sizes, tensors)
        if own == related or any(f.tensors for f in self.filters) or math.prod(bound[r] for r in own) > _PROJECTION_TILES:
            return min(points, int(free * filtered))
        # the points of its own ranks that some kept point projects to: one tile per such point
        # spanning the filters' other ranks, kept unless the bounds prove it empty (an upper bound)
        tiles = {r: (1 if r in own else bound[r]) for r in over}
        condition = self.filters[0].condition if len(self.filters) == 1 else Logical(
            "and", tuple(f.condition for f in self.filters))
        grid = classify_grid(condition, self.space, bound, tiles, bounds_only=True)
        return min(points, int(free * int((grid.state != EMPTY).sum())))

    def operations_per_point(self, sizes: Mapping[str, int] | None = None) -> dict[str, float]:
        """The operations one point applies: its map's, and one for the reduction. With `sizes`,
        by dependence: an operation that reads only some of the iteration ranks is spread over
        the points (its operation_counts over the Einsum's points: `exp(-SLOPE[h])` adds
        1 / (M·E·F) exp per point of linear-attention-decay-recurrent's state update). Filters that
        read tensor values take the dense share (their kept points are not known here)."""
        counts: Counter[str] = Counter(self.map_ops)
        if self.reduce_op is not None:
            counts[_REDUCE_OPS[self.reduce_op]] += 1
        if sizes is None or all(ranks >= set(self.iteration_ranks) for _, ranks in self.operation_ranks()):
            return dict(counts)
        bound = self.space.bound(sizes)
        if any(f.tensors for f in self.filters):
            dense = math.prod(bound[r] for r in self.iteration_ranks)
            spread: Counter[str] = Counter()
            for kind, ranks in self.operation_ranks():
                spread[kind] += math.prod(bound[r] for r in ranks) / dense if not ranks >= set(self.iteration_ranks) else 1
            if self.reduce_op is not None:
                spread[_REDUCE_OPS[self.reduce_op]] += 1
            return dict(spread)
        points = self.iteration_points(bound)
        if not points:
            return dict(counts)
        return {kind: count / points for kind, count in self.operation_counts(bound).items()}

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Cascade:
    """A named cascade of Einsums over ranks; sizes may be symbols bound at simulation time."""

    name: str
    description: str
    ranks: Mapping[str, int | str]  # every rank: an int, a symbol, or a size expression (ceil(M/M0))
    inputs: Mapping[str, tuple[str, ...]]  # input tensor -> its ranks
    outputs: tuple[str, ...]
    einsums: tuple[Einsum, ...]
    partitions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # M -> (M1, M0)
    filters: tuple[Filter, ...] = ()  # cascade-wide filters (copied into each Einsum they apply to)
    symbols: Mapping[str, int] = field(default_factory=dict)  # default values of size symbols
    represents: tuple[str, ...] = ()  # published algorithms this cascade stands for (taxonomy)
    source: str = "<string>"
    space: Space = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __hash__(self) -> int:
        # dict fields are not hashable; a cascade is identified by its name, file and Einsums
        return hash((self.name, self.source, self.einsums))

    def bind(self, sizes: Mapping[str, int] | None = None) -> dict[str, int]:
        """Every rank (and symbol) as an int, from symbol values such as kv_len, q_len, block_m.

        Rank names override: bind({"M": 4096}) works as well as bind({"kv_len": 4096}).
        A constant index past its rank's bound size (`V[b,h,f,999999]` with M = 16) is a
        SpecError naming the Einsum: it used to be clipped to the last position, silently.
        """
        bound = self.space.bind(sizes)
        self._check_constant_indices(bound)
        return bound

    def _check_constant_indices(self, bound: Mapping[str, int]) -> None:
        iterative = self.iterative_tensors
        for einsum in self.einsums:
            for access in accesses(einsum.expression):
                declared = self.tensors[access.tensor]
                for read in resolve_access(self.space, declared, access):
                    if read.kind != "const":
                        continue
                    extent = bound[read.rank] + (1 if iterative.get(access.tensor) == read.rank else 0)
                    if not 0 <= read.value < extent:
                        raise SpecError(f"{self.source}: Einsum {einsum.text!r}: {access} reads position {read.value} "
                                        f"of rank {read.rank}, which has {extent} positions (0 to {extent - 1})")

    def einsum(self, output: str) -> Einsum:
        for einsum in self.einsums:
            if einsum.output == output:
                return einsum
        raise SpecError(f"{self.name}: no Einsum produces {output!r}")

    @property
    def tensors(self) -> dict[str, tuple[str, ...]]:
        """Every tensor (inputs, then Einsum outputs) -> its ranks."""
        found = dict(self.inputs)
        for einsum in self.einsums:
            found[einsum.output] = einsum.output_ranks
        return found

    @property
    def iterative_tensors(self) -> dict[str, str]:
        """Tensors written at [r+1] -> the iterative rank."""
        return {e.output: e.iterative_rank for e in self.einsums if e.iterative_rank}

    def tensor_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """Extent along each rank; an iterative tensor holds M1 + 1 states along its rank."""
        if name not in self.tensors:
            raise SpecError(f"{self.name}: no tensor named {name!r}")
        bound = self.space.bound(sizes)
        iterative = self.iterative_tensors.get(name)
        return tuple(bound[r] + (1 if r == iterative else 0) for r in self.tensors[name])

    def tensor_elements(self, name: str, sizes: Mapping[str, int]) -> int:
        """Number of elements of a tensor under bound sizes."""
        return math.prod(self.tensor_shape(name, sizes))

    def tensor_sizes(self, sizes: Mapping[str, int]) -> dict[str, int]:
        """Element count of every tensor."""
        bound = self.space.bound(sizes)
        return {name: self.tensor_elements(name, bound) for name in self.tensors}

    def __str__(self) -> str:
        return "\n".join(e.text for e in self.einsums)


def map_operation_ranks(expr: Expr, variables: Mapping[str, str], space: Space,
                        iteration_ranks: tuple[str, ...]) -> tuple[tuple[str, frozenset[str]], ...]:
    """map_operations' operations, each with the iteration ranks its subtree reads: index
    variables (`variables`: m1 -> M1) of its accesses, and the iteration ranks of the family of
    each coordinate it reads as a value (`m` of a partitioned M reads M1 and M0)."""
    found: list[tuple[str, frozenset[str]]] = []

    def ranks_of(node) -> frozenset[str]:
        ranks: set[str] = set()
        for part in walk(node):
            if isinstance(part, Access):
                ranks |= {variables[i.name] for i in part.indices if i.kind == "var" and i.name in variables}
            elif isinstance(part, Coordinate):
                family = space.family(part.rank)
                ranks |= {r for r in iteration_ranks if r in family}
        return frozenset(ranks)

    def visit(node) -> None:
        if is_constant(node):
            return
        ranks = ranks_of(node)
        if isinstance(node, Binary) and node.op == "/" and is_constant(node.right):
            found.append(("mul", ranks))
        elif isinstance(node, Binary):
            found.append((_BINARY_OPS[node.op], ranks))
        elif isinstance(node, Unary):
            found.append(("sub", ranks))
        elif isinstance(node, Call):
            found.append((_CALL_OPS.get(node.func, node.func), ranks))
        elif isinstance(node, Compare):
            found.append(("cmp", ranks))
        elif isinstance(node, Logical):
            found.extend([(node.op, ranks)] * (len(node.operands) - 1))
        elif isinstance(node, Not):
            found.append(("not", ranks))
        for child in _children(node):
            visit(child)

    visit(expr)
    return tuple(reversed(found))


def map_operations(expr: Expr) -> tuple[str, ...]:
    """The operations a map applies at each point, e.g. exp(QK - GM) -> ("sub", "exp").

    A part that reads no tensor and no coordinate (`M - P`, `1 / sqrt(E)`) is a constant,
    computed once, and counts nothing; so dividing by one is multiplying by its reciprocal:
    `QK / 15` counts a "mul", exactly as `QK * 0.0667` does.
    """
    ops: list[str] = []

    def visit(node) -> None:
        if is_constant(node):
            return
        if isinstance(node, Binary) and node.op == "/" and is_constant(node.right):
            ops.append("mul")
        elif isinstance(node, Binary):
            ops.append(_BINARY_OPS[node.op])
        elif isinstance(node, Unary):
            ops.append("sub")
        elif isinstance(node, Call):
            ops.append(_CALL_OPS.get(node.func, node.func))
        elif isinstance(node, Compare):
            ops.append("cmp")
        elif isinstance(node, Logical):
            ops.extend([node.op] * (len(node.operands) - 1))
        elif isinstance(node, Not):
            ops.append("not")
        for child in _children(node):
            visit(child)

    visit(expr)
    return tuple(reversed(ops))


def _children(node) -> tuple:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, (Binary, Compare)):
        return (node.left, node.right)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Logical):
        return node.operands
    if isinstance(node, Not):
        return (node.operand,)
    return ()


def is_constant(expr) -> bool:
    """True when `expr` reads no tensor and no coordinate: its value is one number per launch."""
    return not any(isinstance(node, (Access, Coordinate)) for node in walk(expr))


def coordinates(expr) -> tuple[str, ...]:
    """The ranks whose coordinates `expr` reads as values, in first-read order."""
    return tuple(dict.fromkeys(node.rank for node in walk(expr) if isinstance(node, Coordinate)))


def accesses(expr: Expr) -> tuple[Access, ...]:
    return tuple(node for node in walk(expr) if isinstance(node, Access))


def names(expr: Expr) -> tuple[Name, ...]:
    return tuple(node for node in walk(expr) if isinstance(node, Name))
