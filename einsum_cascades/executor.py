"""The float64 reference executor: evaluates any cascade numerically, honouring filters,
partitions with tail tiles, and iterative ranks; the oracle kernels are tested against."""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np

from einsim.einsum_cascades.expr import Access, Binary, Name, Number, walk
from einsim.einsum_cascades.ir import Cascade, Einsum, resolve_access
from einsim.einsum_cascades.space import gather
from einsim.einsum_cascades.passes import dependency_graph
from einsim.einsum_cascades.values import evaluate
from einsim.errors import ShapeError, SpecError

_IDENTITY = {"sum": 0.0, "max": -np.inf, "min": np.inf}


def execute(
    cascade: Cascade,
    inputs: Mapping[str, np.ndarray],
    sizes: Mapping[str, int] | None = None,
    *,
    intermediates: bool = False,
) -> dict[str, np.ndarray]:
    """Evaluate `cascade` on `inputs` (arrays laid out in each input's declared rank order).

    Rank sizes come from the inputs' shapes, then `sizes` (symbols such as block_m, or rank
    names), then the cascade's defaults. Returns the outputs (every tensor with
    `intermediates=True`); an iterative tensor holds its M1 + 1 states.

    Conventions that make empty sets behave (a tile or a whole row masked by a filter):
    max over nothing is -inf, sum over nothing is 0, (-inf) - (-inf) is -inf (so exp gives 0),
    and x / 0 is 0 — the oracle's empty rows return 0.
    """
    arrays = {}
    inferred: dict[str, int] = {}
    for name, ranks in cascade.inputs.items():
        if name not in inputs:
            raise ShapeError(f"{cascade.name}: missing input {name} (ranks [{', '.join(ranks)}])")
        array = np.asarray(inputs[name], dtype=np.float64)
        if array.ndim != len(ranks):
            raise ShapeError(f"{cascade.name}: input {name} has ranks [{', '.join(ranks)}] but shape {array.shape}")
        for rank, extent in zip(ranks, array.shape):
            if inferred.setdefault(rank, extent) != extent:
                raise ShapeError(f"{cascade.name}: rank {rank} is {inferred[rank]} in one input and {extent} in {name}")
        arrays[name] = array
    unknown = set(inputs) - set(cascade.inputs)
    if unknown:
        raise ShapeError(f"{cascade.name}: unknown inputs {', '.join(sorted(unknown))}; inputs: {', '.join(cascade.inputs)}")
    for rank, extent in (sizes or {}).items():
        if rank in inferred and inferred[rank] != extent:
            raise ShapeError(f"{cascade.name}: sizes give {rank} = {extent} but the inputs have {inferred[rank]}")
    _check_derived_sizes(cascade, inferred, sizes or {})
    bound = cascade.bind({**inferred, **(sizes or {})})
    for name, array in arrays.items():
        expected = cascade.tensor_shape(name, bound)
        if array.shape != expected:
            ranks = cascade.inputs[name]
            axes = ", ".join(f"{r}={e}" for r, e in zip(ranks, expected))
            raise ShapeError(f"{cascade.name}: input {name} [{', '.join(ranks)}] should have shape {expected} ({axes}), got {array.shape}")

    run = _Run(cascade, bound, arrays)
    graph = dependency_graph(cascade)
    condensed = nx.condensation(graph)
    with np.errstate(all="ignore"):
        for component in nx.topological_sort(condensed):
            members = condensed.nodes[component]["members"]
            if len(members) == 1 and not graph.has_edge(next(iter(members)), next(iter(members))):
                run.einsum(graph.nodes[next(iter(members))]["einsum"])
            else:
                run.loop(graph, members)
    if intermediates:
        return dict(run.store)
    return {name: run.store[name] for name in cascade.outputs}


def _check_derived_sizes(cascade: Cascade, inferred: Mapping[str, int], sizes: Mapping[str, int]) -> None:
    """A rank whose size follows from others (M1 = ceil(M/M0)) read off an input's shape (the
    M1 axis of a block mask) must be that size: a block mask for other tiles is an error."""
    exprs = cascade.space.size_exprs
    derived = [r for r in inferred if r in exprs and r not in sizes
               and any(isinstance(n, Name) and n.name in cascade.ranks for n in walk(exprs[r]))]
    if not derived:
        return
    reference = cascade.bind({k: v for k, v in {**inferred, **sizes}.items() if k not in derived})
    for rank in derived:
        if reference[rank] != inferred[rank]:
            holder = next(n for n, ranks in cascade.inputs.items() if rank in ranks)
            symbol = _tile_symbol(cascade, rank)
            fix = f"make {holder} match or pass the tile size (sizes={{{symbol!r}: ...}})" if symbol else f"make {holder} match"
            raise ShapeError(
                f"{cascade.name}: input {holder} has {rank} = {inferred[rank]} along its {rank} axis, but "
                f"{rank} = {cascade.ranks[rank]} = {reference[rank]} for these sizes; {fix}"
            )


def _tile_symbol(cascade: Cascade, rank: str) -> str | None:
    """The symbol that sets a derived rank's tile (block_m for M1 = ceil(M/M0), M0: block_m)."""
    parent = cascade.space.parent(rank)
    for part in cascade.partitions.get(parent, ()):
        if part != rank and isinstance(cascade.ranks.get(part), str):
            return cascade.ranks[part]
    return None


class _Run:
    def __init__(self, cascade: Cascade, sizes: dict[str, int], inputs: dict[str, np.ndarray]):
        self.cascade, self.sizes, self.space = cascade, sizes, cascade.space
        self.store: dict[str, np.ndarray] = dict(inputs)
        for einsum in cascade.einsums:
            shape = cascade.tensor_shape(einsum.output, sizes)
            fill = einsum.init if einsum.iterative_rank else 0.0
            self.store[einsum.output] = np.full(shape, fill, dtype=np.float64)

    def loop(self, graph: nx.DiGraph, members: set[str]) -> None:
        """A running state and the Einsums of its recurrence: step along the iterative rank,
        evaluating each at one coordinate in dependency order."""
        einsums = [graph.nodes[m]["einsum"] for m in members]
        ranks = {e.iterative_rank for e in einsums if e.iterative_rank}
        if len(ranks) != 1:
            names = ", ".join(sorted(members))
            raise SpecError(f"{self.cascade.name}: Einsums {names} depend on each other without one iterative rank")
        rank = ranks.pop()
        for einsum in einsums:
            if rank not in einsum.iteration_ranks:
                raise SpecError(
                    f"{einsum.source}:{einsum.line}: Einsum {einsum.text!r}: it is part of the recurrence over "
                    f"{rank} but does not iterate {rank.lower()}"
                )
        inner = nx.DiGraph()
        inner.add_nodes_from(members)
        inner.add_edges_from((u, v) for u, v, d in graph.subgraph(members).edges(data=True) if not d["carried"])
        order = list(nx.topological_sort(inner))
        for step in range(self.sizes[rank]):
            for name in order:
                self.einsum(graph.nodes[name]["einsum"], fixed=(rank, step))

    def einsum(self, einsum: Einsum, fixed: tuple[str, int] | None = None) -> None:
        ranks = einsum.iteration_ranks
        extents = [1 if fixed and r == fixed[0] else self.sizes[r] for r in ranks]
        axes = {}
        for axis, rank in enumerate(ranks):
            shape = [1] * len(ranks)
            shape[axis] = extents[axis]
            start = fixed[1] if fixed and rank == fixed[0] else 0
            axes[rank] = (np.arange(extents[axis]) + start).reshape(shape)
        coords, mask = self.space.coordinates(axes, self.sizes)
        read = lambda access: self.gather(access, coords)  # noqa: E731
        for flt in einsum.filters:
            mask = mask & flt.evaluate(coords, self.sizes, read)
        result = self._contract(einsum, coords, mask, extents)
        if result is None:
            value = np.broadcast_to(evaluate(einsum.expression, coords, self.sizes, read), extents)
            if einsum.reduce_op is not None:
                reduced_axes = tuple(range(len(einsum.output_ranks), len(ranks)))
                masked = np.where(np.broadcast_to(mask, extents), value, _IDENTITY[einsum.reduce_op])
                result = {"sum": np.sum, "max": np.max, "min": np.min}[einsum.reduce_op](masked, axis=reduced_axes)
            else:
                result = value
        out = self.store[einsum.output]
        target = []
        for rank, index in zip(einsum.output_ranks, einsum.output_indices):
            offset = index.offset
            if fixed and rank == fixed[0]:
                target.append(slice(fixed[1] + offset, fixed[1] + offset + 1))
            else:
                target.append(slice(offset, offset + self.sizes[rank]))
        target = tuple(target)
        if einsum.reduce_op is None and einsum.iterative_rank is not None and not np.all(mask):
            # a running state's update skipped at a filtered point keeps the state as it was
            result = self._carry(einsum, result, mask, extents, fixed)
        elif einsum.reduce_op is None and not np.all(mask):
            result = np.where(mask, result, out[target])
        out[target] = result

    def _carry(self, einsum: Einsum, result, mask, extents, fixed):
        """The new states of a filtered running-state update: the update where the filter keeps
        the point, the previous state (at [r]) where it does not."""
        out = self.store[einsum.output]
        axis = einsum.output_ranks.index(einsum.iterative_rank)
        result = np.array(np.broadcast_to(result, extents))
        mask = np.broadcast_to(mask, extents)
        steps = range(fixed[1], fixed[1] + 1) if fixed else range(self.sizes[einsum.iterative_rank])
        for i, step in enumerate(steps):
            before = [slice(None)] * out.ndim
            before[axis] = step
            previous = out[tuple(before)] if (fixed or step == 0) else np.take(result, i - 1, axis=axis)
            here = [slice(None)] * result.ndim
            here[axis] = i
            result[tuple(here)] = np.where(mask[tuple(here)], result[tuple(here)], previous)
        return result

    def _contract(self, einsum: Einsum, coords, mask, extents):
        """A summed product of tensors (QK = Q*K over e) through np.einsum, so that the whole
        iteration space (E x M x P) is never materialised; None when the Einsum is not one."""
        if einsum.reduce_op != "sum":
            return None
        factors, scale = [], 1.0
        stack = [einsum.expression]
        while stack:
            node = stack.pop()
            if isinstance(node, Binary) and node.op == "*":
                stack += [node.left, node.right]
            elif isinstance(node, Access):
                factors.append(self.gather(node, coords))
            elif isinstance(node, Number):
                scale *= node.value
            else:
                return None
        if mask is not True:
            factors.append(np.asarray(mask, dtype=np.float64))
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        operands, subscripts = [], []
        for factor in factors:
            factor = np.asarray(factor, dtype=np.float64)
            if not np.all(np.isfinite(factor)):
                return None  # 0 * inf at a masked point must not leak into the sum
            keep = [i for i in range(len(extents)) if factor.shape[i] != 1 or extents[i] == 1]
            operands.append(factor.reshape([factor.shape[i] for i in keep]))
            subscripts.append("".join(letters[i] for i in keep))
        output = letters[:len(einsum.output_ranks)]
        result = np.einsum(",".join(subscripts) + "->" + output, *operands, optimize=True)
        return np.broadcast_to(result * scale, extents[:len(einsum.output_ranks)])

    def gather(self, access: Access, coords):
        reads = resolve_access(self.space, self.cascade.tensors[access.tensor], access)
        return gather(self.store[access.tensor], reads, coords)
