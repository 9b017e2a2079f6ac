"""Pass analysis (FuseMax §III): over the cascade's dependency graph, the fewest passes over a rank,
the pass each Einsum runs in, and what must stay live between passes, with its size formula."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from einsim.einsum_cascades.expr import Access, Name, walk
from einsim.einsum_cascades.ir import Cascade, Einsum, resolve_access
from einsim.errors import SpecError, brief

# How much of the current traversal of the rank a value at one coordinate depends on.
NONE, POINT, TILE, PREFIX, FULL = range(5)
_LEVEL_NAMES = ("none", "point", "tile", "prefix", "full")


@dataclass(frozen=True)
class LiveTensor:
    """A tensor written in one pass and read in a later one: it stays on chip or goes off chip."""

    tensor: str
    ranks: tuple[str, ...]
    elements: str  # formula over rank sizes, e.g. "M*P" or "(M1+1)*P"
    grows_with_rank: bool  # its size grows with the analysed rank (the buffer grows with M)
    produced_in: int  # pass that writes it (0: an input, read from memory)
    consumed_in: tuple[int, ...]  # later passes that read it


@dataclass(frozen=True)
class PassReport:
    cascade: str
    rank: str
    passes: int
    einsum_pass: dict[str, int]  # Einsum output -> 1-based pass
    live_across_passes: list[LiveTensor]
    iterates_rank: dict[str, bool] = field(default_factory=dict)  # does the Einsum traverse the rank
    passes_within: dict[str, int] = field(default_factory=dict)  # e.g. decode: {"MT": 1} per chunk
    family: tuple[str, ...] = ()  # the rank and its partition parts

    def to_json(self) -> dict:
        return {
            "cascade": self.cascade,
            "rank": self.rank,
            "passes": self.passes,
            "passes_within": dict(self.passes_within),
            "einsum_pass": dict(self.einsum_pass),
            "iterates_rank": dict(self.iterates_rank),
            "live_across_passes": [
                {
                    "tensor": t.tensor, "ranks": list(t.ranks), "elements": t.elements,
                    "grows_with_rank": t.grows_with_rank, "produced_in": t.produced_in,
                    "consumed_in": list(t.consumed_in),
                }
                for t in self.live_across_passes
            ],
        }


def dependency_graph(cascade: Cascade) -> nx.DiGraph:
    """Einsums as nodes (by output name), an edge per tensor read, carrying the accesses.

    Reads of an iterative tensor's previous state (RM[m1,p] for RM[m1+1,p]) are marked
    `carried`: they close the loop of a running state and never order passes.
    """
    from einsim.einsum_cascades.loader import is_previous_state

    graph = nx.DiGraph()
    producers = {e.output: e for e in cascade.einsums}
    for einsum in cascade.einsums:
        graph.add_node(einsum.output, einsum=einsum)
    for einsum in cascade.einsums:
        for access in einsum.operands:
            if access.tensor not in producers:
                continue
            carried = is_previous_state(access, producers[access.tensor])
            if graph.has_edge(access.tensor, einsum.output):
                data = graph.edges[access.tensor, einsum.output]
                data["accesses"].append(access)
                data["carried"] = data["carried"] and carried
            else:
                graph.add_edge(access.tensor, einsum.output, accesses=[access], carried=carried)
    return graph


class _RankView:
    """The analysed rank's family (the rank and its partition parts) in the cascade's iteration
    space: which parts enclose which, and how much of the rank's current traversal a value
    depends on (NONE < POINT < TILE < PREFIX < FULL)."""

    def __init__(self, cascade: Cascade, rank: str):
        self.cascade = cascade
        self.space = cascade.space
        self.family = self.space.family(rank)
        self.order = _leaf_order(self.space, rank)

    def span(self, r: str) -> tuple[int, int]:
        leaves = [self.order[leaf] for leaf in _leaves(self.space, r)]
        return min(leaves), max(leaves)

    def encloses(self, outer: str, inner: str) -> bool:
        return self.span(outer)[1] < self.span(inner)[0]

    def access_level(self, access: Access, producer: Einsum, level: int) -> int:
        """What the consumer sees of the producer's dependence through this access."""
        if level == NONE:
            return NONE
        reads = resolve_access(self.space, self.cascade.tensors[access.tensor], access)
        iterated = [r.source for r in reads if r.kind in ("coord", "part") and r.source in self.family]
        for read in reads:
            if read.rank not in self.family:
                continue
            if read.kind == "const" and read.rank == producer.iterative_rank and read.value == 0:
                return NONE  # the initial state
            if read.kind == "final":
                # the last state of a running value: the whole traversal, unless the consumer
                # stays inside an enclosing tile (a chunk's final state, read per chunk)
                if not any(self.encloses(v, read.rank) for v in iterated):
                    return FULL
                level = max(level, TILE)
        return level

    def introduced(self, einsum: Einsum) -> int:
        """The dependence an Einsum's own iteration of the rank introduces."""
        if not set(einsum.iteration_ranks) & self.family:
            return NONE
        if einsum.iterative_rank in self.family:
            return PREFIX
        kept = [r for r in einsum.output_ranks if r in self.family]
        reduced = [r for r in einsum.reduced_ranks if r in self.family]
        if not reduced:
            return POINT
        if all(any(self.encloses(k, r) for k in kept) for r in reduced):
            return TILE
        return FULL

    def seen(self, graph: nx.DiGraph, producer_name: str, name: str, level: dict[str, int]) -> int:
        """How much of the traversal `name` sees of its producer's dependence (over all reads)."""
        producer = graph.nodes[producer_name]["einsum"]
        return max(self.access_level(a, producer, level[producer_name])
                   for a in graph.edges[producer_name, name]["accesses"])


def _assign_passes(cascade: Cascade, graph: nx.DiGraph, view: _RankView) -> dict[str, int]:
    """Einsum output -> pass, over the strongly connected components in topological order."""
    einsum_pass: dict[str, int] = {}
    level: dict[str, int] = {}
    condensed = nx.condensation(graph)
    for component in nx.topological_sort(condensed):
        members = sorted(condensed.nodes[component]["members"], key=lambda n: _position(cascade, n))
        # the pass: after every producer outside the component, one later if the read needs a
        # finished traversal and this Einsum traverses the rank again
        current = 1
        for name in members:
            traverses = bool(set(graph.nodes[name]["einsum"].iteration_ranks) & view.family)
            for producer_name in graph.predecessors(name):
                if producer_name not in members:
                    full = traverses and view.seen(graph, producer_name, name, level) == FULL
                    current = max(current, einsum_pass[producer_name] + (1 if full else 0))
        for name in members:
            einsum_pass[name] = current
            level[name] = view.introduced(graph.nodes[name]["einsum"])
        # dependence on the current traversal: introduced by iterating the rank, carried from
        # producers of the same pass; iterate inside the component until it settles
        changed = True
        while changed:
            changed = False
            for name in members:
                new = max([level[name]] + [view.seen(graph, p, name, level) for p in graph.predecessors(name)
                                           if einsum_pass[p] == current])
                if new != level[name]:
                    level[name], changed = new, True
    return einsum_pass


def analyze_passes(cascade: Cascade, rank: str = "M") -> PassReport:
    """The lower bound on passes over `rank` and the pass of every Einsum.

    An Einsum that iterates the rank (or one of its partition parts) and reads a value that
    depends on the whole traversal of an earlier Einsum — a full reduction over the rank, or the
    final state RNV[M1] of a running state — cannot start before that traversal ends: it begins
    a new pass. Reductions inside a tile (over M0, keeping m1) and running states read at [m1]
    or [m1+1] depend only on the current or earlier tiles and stay in the same pass.
    """
    if not isinstance(cascade, Cascade):
        raise SpecError(f"analyze_passes: expected a Cascade (einsim.load_cascade(name or path)), got {brief(cascade)}")
    if rank not in cascade.ranks:
        raise SpecError(f"{cascade.name}: unknown rank {brief(rank)}; ranks: {', '.join(cascade.ranks)}")
    view = _RankView(cascade, rank)
    family = view.family
    einsum_pass = _assign_passes(cascade, dependency_graph(cascade), view)
    passes = max(einsum_pass.values(), default=1)
    iterates = {e.output: bool(set(e.iteration_ranks) & family) for e in cascade.einsums}
    live = _live_tensors(cascade, einsum_pass, family, rank)
    within = {part: analyze_passes(cascade, part).passes
              for part in sorted(family - {rank}) if part in view.space.partitions}
    return PassReport(
        cascade=cascade.name, rank=rank, passes=passes,
        einsum_pass={e.output: einsum_pass[e.output] for e in cascade.einsums},
        live_across_passes=live, iterates_rank=iterates, passes_within=within,
        family=tuple(sorted(family, key=lambda r: (view.span(r)[0], -view.span(r)[1]))),
    )


def _leaves(space, rank: str) -> list[str]:
    parts = space.partitions.get(rank)
    if not parts:
        return [rank]
    return [leaf for part in parts for leaf in _leaves(space, part)]


def _leaf_order(space, rank: str) -> dict[str, int]:
    return {leaf: i for i, leaf in enumerate(_leaves(space, rank))}


def _position(cascade: Cascade, name: str) -> int:
    return [e.output for e in cascade.einsums].index(name)


def _live_tensors(cascade: Cascade, einsum_pass: dict[str, int], family: set[str], rank: str) -> list[LiveTensor]:
    """Tensors read in a pass after the one that writes them (inputs: read in two passes), with
    the part later passes read: only the final state RM[M1] of a running state, say."""
    space = cascade.space
    readers: dict[str, dict[int, list[Access]]] = {}
    for einsum in cascade.einsums:
        # a filter's reads (DQ[b,p] == DK[b,m]) are reads of the pass too
        for access in einsum.operands + einsum.filter_operands:
            readers.setdefault(access.tensor, {}).setdefault(einsum_pass[einsum.output], []).append(access)
    growing = _growing_ranks(cascade, rank)
    iterative = cascade.iterative_tensors
    live = []
    for tensor, ranks in cascade.tensors.items():
        by_pass = readers.get(tensor, {})
        if tensor in cascade.inputs:
            produced = 0
            later = tuple(sorted(by_pass))[1:]
            read_ranks = list(ranks)
        else:
            produced = einsum_pass[tensor]
            later = tuple(sorted(p for p in by_pass if p > produced))
            kept = set()
            for p in later:
                for access in by_pass[p]:
                    kept |= {r.rank for r in resolve_access(space, ranks, access) if r.kind in ("coord", "part")}
            read_ranks = [r for r in ranks if r in kept]
        if not later:
            continue
        factors = [f"({r}+1)" if iterative.get(tensor) == r else r for r in _collapse_parts(space, read_ranks)]
        live.append(LiveTensor(
            tensor=tensor, ranks=tuple(read_ranks), elements="*".join(factors) or "1",
            grows_with_rank=any(r in growing for r in read_ranks), produced_in=produced, consumed_in=later,
        ))
    return live


def _collapse_parts(space, ranks: list[str]) -> list[str]:
    """Write P for adjacent parts P1, P0 in a size formula."""
    ranks = list(ranks)
    changed = True
    while changed:
        changed = False
        for parent, parts in space.partitions.items():
            n = len(parts)
            for i in range(len(ranks) - n + 1):
                if tuple(ranks[i:i + n]) == parts:
                    ranks[i:i + n] = [parent]
                    changed = True
                    break
    return ranks


def _growing_ranks(cascade: Cascade, rank: str) -> set[str]:
    """Ranks whose size grows with `rank`: itself and those whose size expression reads it
    (M1 = ceil(M/M0))."""
    exprs = cascade.space.size_exprs
    growing = {rank}
    changed = True
    while changed:
        changed = False
        for name, expr in exprs.items():
            if name in growing:
                continue
            terms = [n.name for n in walk(expr) if isinstance(n, Name)]
            # the numerator side: ceil(M/M0) grows with M, not with M0
            numerator = terms[0] if terms else None
            if numerator in growing:
                growing.add(name)
                changed = True
    return growing
