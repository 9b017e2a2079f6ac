"""Draw a cascade's dependency graph: inputs and Einsums in topological layers, Einsums coloured
by the pass they run in, loop-carried reads of a running state dashed."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from einsim.einsum_cascades.ir import Cascade
from einsim.einsum_cascades.passes import PassReport, dependency_graph


FORMATS = (".png", ".svg", ".pdf")


def draw_cascade(cascade: Cascade, path: str | Path, report: PassReport | None = None) -> None:
    """Save the drawing to `path` (.png, .svg or .pdf); a bad path is a ConfigError before any
    drawing (matplotlib's own errors would surface as a traceback)."""
    from einsim.errors import ConfigError

    target = Path(path)
    if target.suffix.lower() not in FORMATS:
        raise ConfigError(f"{path}: expected a file name ending in {', '.join(FORMATS)}, got {target.suffix or 'no suffix'!r}")
    if not target.parent.is_dir():
        raise ConfigError(f"{path}: the folder {str(target.parent)!r} does not exist; create it or write elsewhere")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graph = dependency_graph(cascade)
    full = nx.DiGraph()
    for name in cascade.inputs:
        full.add_node(name, kind="input")
    for einsum in cascade.einsums:
        full.add_node(einsum.output, kind="einsum")
        for tensor in einsum.operand_tensors:
            if tensor in cascade.inputs:
                full.add_edge(tensor, einsum.output, carried=False)
    for u, v, data in graph.edges(data=True):
        full.add_edge(u, v, carried=data["carried"])
    layering = full.edge_subgraph([(u, v) for u, v, d in full.edges(data=True) if not d["carried"]]).copy()
    layering.add_nodes_from(full.nodes)
    for layer, nodes in enumerate(nx.topological_generations(layering)):
        for node in nodes:
            full.nodes[node]["layer"] = layer
    positions = nx.multipartite_layout(full, subset_key="layer", align="horizontal", scale=2.0)
    positions = {n: (x, -y) for n, (x, y) in positions.items()}  # inputs on top

    width = max(6.0, 1.4 * max(len(list(g)) for g in nx.topological_generations(layering)))
    height = max(4.0, 1.0 * (max(d["layer"] for _, d in full.nodes(data=True)) + 1))
    figure, axes = plt.subplots(figsize=(width, height))
    palette = plt.get_cmap("tab10")
    colours = []
    for node, data in full.nodes(data=True):
        if data["kind"] == "input":
            colours.append("#dddddd")
        else:
            colours.append(palette((report.einsum_pass[node] - 1) % 10) if report else palette(0))
    solid = [(u, v) for u, v, d in full.edges(data=True) if not d["carried"]]
    carried = [(u, v) for u, v, d in full.edges(data=True) if d["carried"]]
    nx.draw_networkx_nodes(full, positions, node_color=colours, node_size=1100, ax=axes, edgecolors="black")
    nx.draw_networkx_labels(full, positions, font_size=8, ax=axes)
    nx.draw_networkx_edges(full, positions, edgelist=solid, ax=axes, arrows=True, node_size=1100)
    nx.draw_networkx_edges(full, positions, edgelist=carried, ax=axes, arrows=True, style="dashed",
                           connectionstyle="arc3,rad=0.3", node_size=1100, edge_color="#555555")
    title = cascade.name
    if report:
        title += f": {report.passes} pass{'es' if report.passes != 1 else ''} over {report.rank} (colour = pass)"
        handles = [
            plt.Line2D([], [], marker="o", linestyle="", markersize=10, markerfacecolor=palette((p - 1) % 10),
                       markeredgecolor="black", label=f"pass {p}")
            for p in range(1, report.passes + 1)
        ]
        axes.legend(handles=handles, loc="lower right", fontsize=8)
    axes.set_title(title + "; dashed: previous state of a running value", fontsize=9)
    axes.axis("off")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120)
    except OSError as error:
        raise ConfigError(f"{path}: cannot write the drawing: {error.strerror or error}") from None
    finally:
        plt.close(figure)
