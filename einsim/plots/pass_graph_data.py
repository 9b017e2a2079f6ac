"""The numbers behind a pass graph: the cascade's Einsums as nodes coloured by the pass over K/V
they run in, edges for the tensors between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from einsim.simulator.simulate import resolve_cascade


# Colour-blind-safe qualitative palette (Okabe & Ito); pass k takes PASS_COLORS[k-1].
PASS_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")


INPUT_COLOR = "#BBBBBB"


def pass_color(pass_index: int) -> str:
    """The colour of pass `pass_index` (1-based); inputs (0) are grey."""
    if pass_index <= 0:
        return INPUT_COLOR
    return PASS_COLORS[(pass_index - 1) % len(PASS_COLORS)]


@dataclass(frozen=True)
class GraphNode:
    name: str
    kind: str  # "input" | "einsum"
    pass_index: int  # 0 for inputs (and for Einsums when no rank was analysed)
    color: str
    x: float
    y: float
    text: str  # the Einsum as written (inputs: their ranks)
    iterative: bool = False  # a running state written at [m1+1]


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    carried: bool = False  # a read of the previous state of a running tensor (RM[m1] by RM[m1+1])


@dataclass(frozen=True)
class PassGraph:
    cascade: str
    rank: str  # "" when no rank was analysed
    passes: int  # 0 when no rank was analysed
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]

    def node(self, name: str) -> GraphNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def rows(self) -> list[dict[str, Any]]:
        return ([{"record": "node", "cascade": self.cascade, **n.__dict__} for n in self.nodes]
                + [{"record": "edge", "cascade": self.cascade, **e.__dict__} for e in self.edges])


def pass_graph(cascade: Any, rank: str | None = None) -> PassGraph:
    """Inputs and Einsums as nodes, an edge per tensor read, each Einsum coloured by its pass over
    `rank` (analyze_passes; default M when the cascade has it, else no pass numbering: passes = 0);
    laid out left to right in topological generations."""
    import networkx as nx

    from einsim.einsum_cascades.passes import analyze_passes, dependency_graph

    cascade = resolve_cascade(cascade)
    if rank is None and "M" in cascade.ranks:
        rank = "M"
    report = analyze_passes(cascade, rank=rank) if rank is not None else None
    graph = dependency_graph(cascade)
    edges = [GraphEdge(a, b, bool(d.get("carried"))) for a, b, d in graph.edges(data=True)]
    for einsum in cascade.einsums:
        for tensor in einsum.operand_tensors:
            if tensor in cascade.inputs:
                edges.append(GraphEdge(tensor, einsum.output))
    ordering = nx.DiGraph()
    ordering.add_nodes_from(cascade.inputs)
    ordering.add_nodes_from(e.output for e in cascade.einsums)
    ordering.add_edges_from((e.source, e.target) for e in edges if not e.carried and e.source != e.target)
    for layer, names in enumerate(nx.topological_generations(ordering)):
        for name in names:
            ordering.nodes[name]["layer"] = layer
    for name in cascade.inputs:  # just before its first reader: short edges, fewer crossings
        readers = [ordering.nodes[b]["layer"] for b in ordering.successors(name)]
        ordering.nodes[name]["layer"] = max(0, min(readers) - 1) if readers else 0
    # Columns by layer, rows in declaration order (networkx's multipartite_layout orders a layer
    # through a set, which would move nodes between runs of the same command).
    layers: dict[int, list[str]] = {}
    for name in list(cascade.inputs) + [e.output for e in cascade.einsums]:
        layers.setdefault(ordering.nodes[name]["layer"], []).append(name)
    positions = {name: (float(layer), (len(names) - 1) / 2 - i)
                 for layer, names in layers.items() for i, name in enumerate(names)}
    iterative = cascade.iterative_tensors
    nodes = []
    for name in cascade.inputs:
        x, y = positions[name]
        text = f"{name}[{','.join(r.lower() for r in cascade.inputs[name])}]"
        nodes.append(GraphNode(name, "input", 0, INPUT_COLOR, float(x), float(y), text))
    for einsum in cascade.einsums:
        k = report.einsum_pass[einsum.output] if report else 0
        x, y = positions[einsum.output]
        nodes.append(GraphNode(einsum.output, "einsum", k, pass_color(max(k, 1)), float(x), float(y), einsum.text,
                               einsum.output in iterative))
    return PassGraph(cascade=cascade.name, rank=rank or "", passes=report.passes if report else 0,
                     nodes=tuple(nodes), edges=tuple(edges))
