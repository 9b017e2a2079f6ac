"""Draws a cascade's dependency graph with each Einsum coloured by the pass over the rank (M) in
which it runs (analyze_passes), inputs in grey and reads of a running state's previous value dashed."""

from __future__ import annotations


from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from einsim.plots.figure import drawing, new_figure
from einsim.plots.pass_graph_data import INPUT_COLOR, PassGraph, pass_color
from einsim.plots.style import Style, resolve_style

CHAR_WIDTH = 0.6  # a monospace character's width, in units of the font size


def plot_pass_graph(data: PassGraph, *, show_text: bool = True, style: Style | str | None = None) -> Figure:
    """The graph (left) sized to its layers and rows, and its Einsums listed beside it (right),
    sized to the longest line, so the figure holds little whitespace."""
    style = resolve_style(style)
    with drawing(style):
        return _draw(data, show_text, style)


def _draw(data: PassGraph, show_text: bool, style: Style) -> Figure:
    layers = sorted({round(n.x, 6) for n in data.nodes})
    tallest = max(sum(1 for n in data.nodes if round(n.x, 6) == x) for x in layers)
    paper = style.name == "paper"
    graph_width = (0.62 if paper else 0.95) * len(layers)
    einsums = [n for n in data.nodes if n.kind == "einsum"]
    text_size = style.tiny if paper else style.small
    longest = max((len(n.text) for n in einsums), default=0)
    text_width = CHAR_WIDTH * text_size / 72 * longest + 0.2 if show_text else 0.0
    graph_width = max(0.45 * len(layers), min(graph_width, style.max_width - text_width))
    height = max(2.0 if paper else 3.0, (0.42 if paper else 0.62) * max(tallest, 0.5 * len(einsums)) + 0.9)
    figure = new_figure(graph_width + text_width, height, style)
    if show_text:
        graph_axis, text_axis = figure.subplots(1, 2, width_ratios=[graph_width, text_width])
    else:
        graph_axis, text_axis = figure.add_subplot(), None
    node_area = 260 if paper else 620
    where = {n.name: (n.x, n.y) for n in data.nodes}
    step = min((b - a for a, b in zip(layers, layers[1:])), default=1.0)
    for edge in data.edges:
        if edge.source == edge.target:
            continue  # a running state's own previous value: marked on the node instead
        (x0, y0), (x1, y1) = where[edge.source], where[edge.target]
        # Edges that skip layers bend further, so they do not run through the nodes between.
        skips = abs(x1 - x0) > 1.5 * step
        graph_axis.add_patch(FancyArrowPatch(
            (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=8 if paper else 10,
            shrinkA=9 if paper else 13, shrinkB=9 if paper else 13, color="#555555", linewidth=0.9,
            linestyle="--" if edge.carried else "-",
            connectionstyle=f"arc3,rad={0.3 if skips else 0.08}", zorder=1))
    for node in data.nodes:
        graph_axis.scatter([node.x], [node.y], s=node_area, color=node.color, zorder=2,
                           marker="s" if node.kind == "input" else "o",
                           edgecolor="black", linewidth=2.2 if node.iterative else 0.6)
        graph_axis.annotate(node.name, (node.x, node.y), ha="center", va="center", fontsize=style.tiny,
                            fontweight="bold", color="white" if node.kind == "einsum" else "black", zorder=3)
    xs = [n.x for n in data.nodes]
    ys = [n.y for n in data.nodes]
    pad_x = 0.06 * (max(xs) - min(xs) or 1)
    pad_y = 0.1 * (max(ys) - min(ys) or 1)
    graph_axis.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    graph_axis.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    graph_axis.set_axis_off()
    handles = [Line2D([], [], marker="s", linestyle="", color=INPUT_COLOR, markeredgecolor="black", markersize=9, label="input")]
    handles += [Line2D([], [], marker="o", linestyle="", color=pass_color(k), markeredgecolor="black", markersize=9,
                       label=f"pass {k}" if data.passes else "Einsum") for k in range(1, max(data.passes, 1) + 1)]
    if any(n.iterative for n in data.nodes):
        handles.append(Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black",
                              markeredgewidth=2.2, markersize=9, label="running state"))
    if any(e.carried and e.source != e.target for e in data.edges):
        handles.append(Line2D([], [], color="#555555", linestyle="--", label="reads a previous state"))
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False,
                  fontsize=style.tiny if paper else style.small)
    title = data.cascade
    if data.passes:
        title += f": {data.passes} pass{'es' * (data.passes != 1)} over {data.rank}"
    graph_axis.set_title(title)
    if text_axis is not None:
        text_axis.set_axis_off()
        for i, node in enumerate(einsums):
            text_axis.text(0.0, 1.0 - (i + 0.5) / max(len(einsums), 1), node.text, color=node.color,
                           fontsize=text_size, family="monospace", va="center", transform=text_axis.transAxes)
    return figure
