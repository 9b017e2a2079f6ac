"""Draws rooflines: one panel per target, compute roofs (matmul, exp, vector / 1D array) and memory
roofs (off-chip, on-chip), cascades at their predicted point and measured kernels beside them.

The numbers come from data.roofline_data; conventions in docs/plots.md § Roofline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from einsim.plots.roofline_data import RooflineData
from einsim.plots.figure import new_figure, series_color

ROOF_STYLES = {  # role -> line style; compute roofs of one cascade take its colour
    "matmul": {"linestyle": "-", "linewidth": 2.2},
    "exp": {"linestyle": "--", "linewidth": 1.6},
    "vector": {"linestyle": "-.", "linewidth": 1.6},
    "1D array": {"linestyle": "-.", "linewidth": 1.6},
}
MEMORY_STYLES = {"off-chip": {"color": "#444444", "linestyle": "-", "linewidth": 2.2},
                 "on-chip": {"color": "#999999", "linestyle": ":", "linewidth": 1.8}}
MEASURED_MARKERS = ("s", "^", "v", "D", "P", "X", "*", "h", "<", ">")
MEASURED_COLORS = ("#555555", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#2CA02C", "#D62728")


def plot_roofline(data: RooflineData | Sequence[RooflineData], *, annotate: bool = True,
                  title: str | None = None) -> Figure:
    """One roofline panel per RooflineData, side by side, in one Figure."""
    panels = [data] if isinstance(data, RooflineData) else list(data)
    if not panels:
        raise ValueError("plot_roofline needs at least one RooflineData")
    figure = new_figure(6.2 * len(panels), 5.4)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    cascades = list(dict.fromkeys(p.name for d in panels for p in d.points if p.origin == "predicted"))
    colors = {name: series_color(i) for i, name in enumerate(cascades)}
    for axis, panel in zip(axes, panels):
        _draw_panel(axis, panel, colors, annotate)
    if title:
        figure.suptitle(title)
    return figure



def _extent(panel: RooflineData) -> tuple[float, float, float, float]:
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
    y_high = 10 ** math.ceil(math.log10(max(tops + performance) / 1e12 * 1.5))
    return x_low, x_high, y_low, y_high


def _draw_panel(axis: Any, panel: RooflineData, colors: dict[str, str], annotate: bool) -> None:
    x_low, x_high, y_low, y_high = _extent(panel)
    axis.set_xscale("log")
    axis.set_yscale("log")
    compute = [r for r in panel.roofs if r.kind == "compute"]
    memory = [r for r in panel.roofs if r.kind == "memory"]
    top = max(r.flops_per_s for r in compute)
    matmul = next(r.flops_per_s for r in compute if r.role == "matmul")
    offchip = next((r for r in memory if r.level == "off-chip"), memory[0])
    for roof in memory:
        # Bold up to the matmul roof; a thin continuation reaches roofs drawn above it.
        style = MEMORY_STYLES.get(roof.level, MEMORY_STYLES["on-chip"])
        x_ridge, x_top = min(x_high, matmul / roof.peak), min(x_high, top / roof.peak)
        axis.plot([x_low, x_ridge], [roof.peak * x_low / 1e12, roof.peak * x_ridge / 1e12],
                  label=roof.label, zorder=2, **style)
        if x_top > x_ridge:
            axis.plot([x_ridge, x_top], [roof.peak * x_ridge / 1e12, roof.peak * x_top / 1e12], zorder=1,
                      **{**style, "linewidth": 0.7})
    for roof in compute:
        style = dict(ROOF_STYLES.get(roof.role, ROOF_STYLES["vector"]))
        style["color"] = "#000000" if roof.role == "matmul" else (
            colors.get(roof.cascades[0], "#000000") if len(roof.cascades) == 1 else "#333333")
        label = roof.label + (f" [{', '.join(roof.cascades)}]" if roof.cascades else "")
        x_start = max(x_low, roof.flops_per_s / offchip.peak)
        axis.plot([x_start, x_high], [roof.flops_per_s / 1e12] * 2, label=label, zorder=2, **style)

    backends = list(dict.fromkeys(p.name for p in panel.points if p.origin != "predicted"))
    cascades = list(dict.fromkeys(p.name for p in panel.points if p.origin == "predicted"))
    for point in panel.points:
        if point.intensity is None or point.flops_per_s <= 0:
            continue
        x, y = point.intensity, point.flops_per_s / 1e12
        if point.origin == "predicted":
            color = colors.get(point.name, "#000000")
            if point.einsum is None:
                axis.scatter([x], [y], s=80, marker="o", color=color, edgecolor="black", zorder=5,
                             label=f"{point.name} (predicted)")
                if annotate:
                    # Staggered, so cascades at the same intensity keep readable labels.
                    axis.annotate(f"{point.name}: {point.bound_role}-bound", (x, y),
                                  xytext=(7, -12 - 11 * cascades.index(point.name)),
                                  textcoords="offset points", fontsize=8, color=color, zorder=6)
            else:
                axis.scatter([x], [y], s=22, marker="o", color=color, alpha=0.7, zorder=4)
                if annotate:
                    axis.annotate(point.einsum, (x, y), xytext=(3, 3), textcoords="offset points",
                                  fontsize=6, color=color, zorder=6)
        else:
            i = backends.index(point.name)
            axis.scatter([x], [y], s=55, marker=MEASURED_MARKERS[i % len(MEASURED_MARKERS)],
                         color=MEASURED_COLORS[i % len(MEASURED_COLORS)], edgecolor="black", linewidth=0.6,
                         zorder=5, label=f"{point.name} ({point.origin}, {point.problem_label})")

    axis.set_xlim(x_low, x_high)
    axis.set_ylim(y_low, y_high)
    axis.set_xlabel("Operational intensity (FLOP per off-chip byte)")
    axis.set_ylabel("Performance (attention TFLOP/s)")
    problem = panel.problem.name if panel.problem is not None else ""
    axis.set_title(f"{panel.target} ({panel.dtype})" + (f" — {problem}" if problem else ""), fontsize=10)
    axis.grid(True, which="major", color="#DDDDDD", linewidth=0.6)
    handles, labels = axis.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axis.legend(unique.values(), unique.keys(), fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.15),
                ncol=1, frameon=False)
