"""Draws rooflines: one panel per target (panels share both axes, so they compare at a glance),
compute roofs (matmul, exp, vector / 1D array) and memory roofs (off-chip, on-chip) labelled on
the lines themselves, cascades at their simulated point (open rings, so a measured kernel under
one stays visible) and measured kernels beside them, in one legend outside the panels.

The numbers come from roofline_data; conventions in docs/plots.md § Roofline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from einsim.plots.figure import drawing, new_figure, series_color
from einsim.plots.layout import place_labels
from einsim.plots.names import backend_label, workload_label
from einsim.plots.roofline_data import RooflineData
from einsim.plots.roofs import Roof
from einsim.plots.style import Style, resolve_style
from einsim.units import format_rate

ROOF_LINES = {"matmul": "-", "exp": "--", "vector": "-.", "1D array": "-."}
# Where a label may go, (offset in points, ha, va), in order of preference.
ROOF_SIDES = (((-3, 2), "right", "bottom"), ((-3, -2), "right", "top"))
POINT_SIDES = (((0, -7), "center", "top"), ((-8, 0), "right", "center"), ((8, 0), "left", "center"),
               ((0, 7), "center", "bottom"), ((0, -20), "center", "top"), ((0, 20), "center", "bottom"),
               ((-8, -12), "right", "top"), ((8, -12), "left", "top"))
EINSUM_SIDES = (((3, 2), "left", "bottom"), ((3, -2), "left", "top"), ((-3, 2), "right", "bottom"),
                ((-3, -2), "right", "top"))
DODGE = 1.12  # measured kernels at one intensity sit this factor apart on x (docs/plots.md)
MEMORY_COLORS = {"off-chip": "#444444", "on-chip": "#999999"}
MEASURED_MARKERS = ("s", "^", "v", "D", "P", "X", "*", "h", "<", ">")
MEASURED_COLORS = ("#555555", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#2CA02C", "#D62728")


def plot_roofline(data: RooflineData | Sequence[RooflineData], *, annotate: bool = True,
                  title: str | None = None, style: Style | str | None = None) -> Figure:
    """One roofline panel per RooflineData, side by side on shared axes, in one Figure."""
    panels = [data] if isinstance(data, RooflineData) else list(data)
    if not panels:
        raise ValueError("plot_roofline needs at least one RooflineData")
    style = resolve_style(style)
    with drawing(style):
        legend_room = 0.0 if style.legend_below else 2.6
        width = style.width(len(panels), legend_room)
        entries = len({p.name for d in panels for p in d.points if p.einsum is None})
        legend_rows = math.ceil(entries / _legend_columns(width)) if style.legend_below else 0
        figure = new_figure(width, style.panel_height + 0.4 + 0.16 * legend_rows, style)
        axes = figure.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True)[0]
        cascades = list(dict.fromkeys(p.name for d in panels for p in d.points if p.origin == "predicted"))
        backends = list(dict.fromkeys(p.name for d in panels for p in d.points if p.origin != "predicted"))
        colors = {name: series_color(i) for i, name in enumerate(cascades)}
        extent = _union([_extent(panel) for panel in panels])
        labels = []
        for axis, panel in zip(axes, panels):
            labels += _draw_panel(axis, panel, colors, backends, extent, style, annotate)
            axis.label_outer()
        _legend(figure, panels, colors, backends, style)
        workloads = list(dict.fromkeys(workload_label(p.problem) for p in panels if p.problem is not None))
        figure.suptitle(title or "; ".join(workloads))
        _align_to_lines(figure, labels)
        _choose_spots(figure, labels)
        place_labels(figure, labels, leaders=[label for label in labels if not hasattr(label, "roof")])
    return figure


def _extent(panel: RooflineData) -> tuple[float, float, float, float]:
    """x (FLOP/B) and y (TFLOP/s) limits in whole decades around the roofs' ridges and the points."""
    intensities = [p.intensity for p in panel.points if p.intensity]
    ridges = [r.flops_per_s / m.peak for r in panel.roofs if r.kind == "compute"
              for m in panel.roofs if m.kind == "memory" and m.level == "off-chip"]
    values = intensities + ridges
    x_low = 10 ** math.floor(math.log10(min(values) / 4)) if values else 0.1
    x_high = 10 ** math.ceil(math.log10(max(values) * 4)) if values else 1e4
    tops = [r.flops_per_s for r in panel.roofs if r.kind == "compute"]
    performance = [p.flops_per_s for p in panel.points if p.flops_per_s > 0]
    offchip = [r for r in panel.roofs if r.kind == "memory"]
    floor = min([r.peak * x_low for r in offchip] + performance)
    y_low = 10 ** math.floor(math.log10(floor / 1e12 / 2))
    y_high = 10 ** math.ceil(math.log10(max(tops + performance) / 1e12 * 2.5))
    return x_low, x_high, y_low, y_high


def _union(extents: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (min(e[0] for e in extents), max(e[1] for e in extents),
            min(e[2] for e in extents), max(e[3] for e in extents))


def _draw_panel(axis: Any, panel: RooflineData, colors: dict[str, str], backends: list[str],
                extent: tuple[float, float, float, float], style: Style, annotate: bool) -> list:
    """Roofs, points and their labels on one panel; returns the labels to keep apart."""
    x_low, x_high, y_low, y_high = extent
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlim(x_low, x_high)
    axis.set_ylim(y_low, y_high)
    labels = _draw_memory_roofs(axis, panel, extent, style) + _draw_compute_roofs(axis, panel, colors, extent, style)
    labels += _draw_points(axis, panel, colors, backends, style, annotate)
    axis.set_xlabel("Operational intensity (FLOP per off-chip byte)")
    axis.set_ylabel("Attention performance (TFLOP/s)")
    axis.set_title(f"{panel.target_label or panel.target}, {panel.dtype}")
    axis.grid(True, which="major", color="#E4E4E4", linewidth=0.6)
    axis.tick_params(labelsize=style.small)
    return labels


def _offchip(panel: RooflineData) -> Roof:
    memory = [r for r in panel.roofs if r.kind == "memory"]
    return next((r for r in memory if r.level == "off-chip"), memory[0])


def _draw_memory_roofs(axis: Any, panel: RooflineData, extent: tuple[float, ...], style: Style) -> list:
    """Diagonals, bold up to the matmul roof and thin beyond it (to roofs drawn above), each
    labelled along itself near its lower-left end."""
    x_low, x_high = extent[0], extent[1]
    compute = [r for r in panel.roofs if r.kind == "compute"]
    matmul = next(r.flops_per_s for r in compute if r.role == "matmul")
    top = max(r.flops_per_s for r in compute)
    labels = []
    for roof in (r for r in panel.roofs if r.kind == "memory"):
        color = MEMORY_COLORS.get(roof.level, MEMORY_COLORS["on-chip"])
        dashes = "-" if roof.level == "off-chip" else ":"
        x_ridge, x_top = min(x_high, matmul / roof.peak), min(x_high, top / roof.peak)
        y = [roof.peak * x / 1e12 for x in (x_low, x_ridge, x_top)]
        axis.plot([x_low, x_ridge], y[:2], color=color, linestyle=dashes, linewidth=style.line, zorder=2)
        if x_top > x_ridge:
            axis.plot([x_ridge, x_top], y[1:], color=color, linestyle=dashes, linewidth=0.6 * style.line, zorder=1)
        # Along the line, where it is still inside the panel: at a tenth of its visible length.
        x_enter = max(x_low, extent[2] * 1e12 / roof.peak)
        x_label = x_enter * (x_ridge / x_enter) ** 0.08
        name = roof.label.split(" (")[0]
        label = axis.annotate(f"{name} {format_rate(roof.peak, 'B/s')}", (x_label, roof.peak * x_label / 1e12),
                              xytext=(0, 3), textcoords="offset points", color=color, fontsize=style.tiny,
                              rotation_mode="anchor", ha="left", va="bottom", zorder=6)
        label.along = (x_label * 10, roof.peak * x_label * 10 / 1e12)  # a second point of the line: its angle
        labels.append(label)
    return labels


def _align_to_lines(figure: Figure, labels: Sequence[Any]) -> None:
    """Rotate the labels that carry a second point of their line (`along`) to that line's angle on
    screen, which is known once the layout has sized the panels."""
    slanted = [label for label in labels if hasattr(label, "along")]
    if not slanted:
        return
    figure.draw_without_rendering()
    for label in slanted:
        (x0, y0), (x1, y1) = label.axes.transData.transform([label.xy, label.along])
        label.set_rotation(math.degrees(math.atan2(y1 - y0, x1 - x0)))


def _roof_color(roof: Roof, colors: dict[str, str]) -> str:
    if roof.role == "matmul" or not roof.cascades:
        return "#000000"
    return colors.get(roof.cascades[0], "#000000") if len(roof.cascades) == 1 else "#333333"


def _draw_compute_roofs(axis: Any, panel: RooflineData, colors: dict[str, str], extent: tuple[float, ...],
                        style: Style) -> list:
    """Horizontal roofs from their ridge with the off-chip roof, labelled at their right end
    (a cascade's exp and vector roofs name the cascade and take its colour)."""
    x_high = extent[1]
    offchip = _offchip(panel)
    labels = []
    for roof in (r for r in panel.roofs if r.kind == "compute"):
        color = _roof_color(roof, colors)
        height = roof.flops_per_s / 1e12
        x_start = max(extent[0], roof.flops_per_s / offchip.peak)
        axis.plot([x_start, x_high], [height] * 2, color=color, linestyle=ROOF_LINES.get(roof.role, "-."),
                  linewidth=style.line * (1.1 if roof.role == "matmul" else 0.8), zorder=2)
        owner = f" ({', '.join(roof.cascades)})" if roof.cascades else ""
        label = axis.annotate(f"{roof.role}{owner} {format_rate(roof.flops_per_s, 'FLOP/s')}", (x_high, height),
                              xytext=(-3, 2), textcoords="offset points", ha="right", va="bottom", color=color,
                              fontsize=style.tiny, zorder=6)
        # Above or below its line, at its right end or at its left (the ridge): _choose_spots
        label.candidates = [(offset, ha, va) for offset, ha, va in ROOF_SIDES] + [
            ((3, offset[1]), "left", va, (x_start, height)) for offset, _, va in ROOF_SIDES]
        label.roof = True
        labels.append(label)
    return labels


def _choose_spots(figure: Figure, labels: Sequence[Any]) -> None:
    """Each label with `candidates` (offset, ha, va[, xy]) at the one that meets the fewest labels placed
    before it, markers and roof lines: roof labels first (the highest first), then the points'."""
    movable = [label for label in labels if hasattr(label, "candidates")]
    if not movable:
        return
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    placed: dict[Any, list] = {}
    pad = 6 * figure.dpi / 72
    order = sorted(movable, key=lambda lab: (not hasattr(lab, "roof"), -lab.xy[1]))
    for label in order:
        axes = label.axes
        lines = [axes.transData.transform(other.xy)[1] for other in movable
                 if hasattr(other, "roof") and other.axes is axes and other is not label]
        marks = [axes.transData.transform(xy) for xy in getattr(axes, "marks", ())]
        frame = axes.get_window_extent(renderer)
        best = None
        anchor = label.xy
        for offset, ha, va, *where in label.candidates:
            label.xy = where[0] if where else anchor
            label.xyann = offset
            label.set_ha(ha)
            label.set_va(va)
            box = label.get_window_extent(renderer)
            cost = 10 * sum(box.overlaps(other) for other in placed.get(axes, []))
            cost += 20 * (not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)))
            # A marker under a label hides a result: as bad as text on text. Its radius, in pixels.
            cost += 12 * sum(1 for x, y in marks if box.x0 - pad < x < box.x1 + pad and box.y0 - pad < y < box.y1 + pad)
            cost += 4 * sum(1 for y in lines if box.y0 < y < box.y1)
            if best is None or cost < best[0]:
                best = (cost, offset, ha, va, box, label.xy)
        _, label.xyann, ha, va, box, label.xy = best
        label.set_ha(ha)
        label.set_va(va)
        placed.setdefault(axes, []).append(box)


def _draw_points(axis: Any, panel: RooflineData, colors: dict[str, str], backends: list[str], style: Style,
                 annotate: bool) -> list:
    """Simulated cascades as open rings (what bounds them written beside), per-Einsum points as
    small dots, measured kernels as filled markers. Measured kernels at one intensity (every kernel
    of a workload has the same compulsory bytes) are spread sideways by DODGE per kernel, centred
    on it, so none hides another."""
    labels = []
    axis.marks = []  # where markers are, for _choose_spots
    measured = [p for p in panel.points if p.origin != "predicted" and p.intensity]
    for point in panel.points:
        if point.intensity is None or point.flops_per_s <= 0:
            continue
        x, y = point.intensity, point.flops_per_s / 1e12
        if point.origin != "predicted":
            column = [p for p in measured if math.isclose(p.intensity, point.intensity, rel_tol=1e-6)]
            x *= DODGE ** (column.index(point) - (len(column) - 1) / 2)
        axis.marks.append((x, y))
        if point.origin != "predicted":
            i = backends.index(point.name)
            axis.scatter([x], [y], s=0.7 * style.marker, marker=MEASURED_MARKERS[i % len(MEASURED_MARKERS)],
                         color=MEASURED_COLORS[i % len(MEASURED_COLORS)], edgecolor="black", linewidth=0.5, zorder=4)
            continue
        color = colors.get(point.name, "#000000")
        whole = point.einsum is None
        axis.scatter([x], [y], s=style.marker * (1.6 if whole else 0.3), marker="o", facecolor="none" if whole else color,
                     edgecolor=color, linewidth=style.line if whole else 0.5, zorder=5)
        if annotate:
            label = axis.annotate(f"{point.bound_role}-bound" if whole else point.einsum, (x, y), xytext=(0, -7),
                                  textcoords="offset points", color=color, fontsize=style.tiny, zorder=6)
            label.candidates = POINT_SIDES if whole else EINSUM_SIDES
            labels.append(label)
    return labels


def _legend(figure: Figure, panels: Sequence[RooflineData], colors: dict[str, str], backends: list[str],
            style: Style) -> None:
    """One legend for every panel: the cascades (simulated) and the measured kernels."""
    handles = [Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor=color,
                      markeredgewidth=style.line, markersize=7, label=f"{name}, simulated")
               for name, color in colors.items()]
    shapes = {p.name: p.problem_label for d in panels for p in d.points if p.origin != "predicted"}
    for i, name in enumerate(backends):
        origin = next(p.origin for d in panels for p in d.points if p.name == name)
        handles.append(Line2D([], [], marker=MEASURED_MARKERS[i % len(MEASURED_MARKERS)], linestyle="",
                              color=MEASURED_COLORS[i % len(MEASURED_COLORS)], markeredgecolor="black",
                              markeredgewidth=0.5, markersize=6, label=f"{backend_label(name)}, {origin}"))
    if not handles:
        return
    title = "measured: " + ", ".join(sorted(set(shapes.values()))) if shapes else None
    if style.legend_below:
        columns = _legend_columns(figure.get_figwidth())
        figure.legend(handles=handles, loc="outside lower center", ncol=min(columns, len(handles)), frameon=False,
                      title=title, title_fontsize=style.tiny)
    else:
        figure.legend(handles=handles, loc="outside right upper", frameon=False, title=title,
                      title_fontsize=style.tiny)


def _legend_columns(width: float) -> int:
    """Legend columns under the panels of a `width`-inch figure: an entry takes about 2.2 inches."""
    return max(1, int(width / 2.2))
