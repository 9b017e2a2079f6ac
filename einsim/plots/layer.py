"""Draws one transformer layer: every operator on the target's roofline (its FLOP per HBM byte
against the FLOP/s it attains) and the share of the layer's time each takes."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.figure import Figure

from einsim.plots.figure import drawing, new_figure, series_color
from einsim.plots.layout import place_labels
from einsim.plots.names import model_label
from einsim.plots.style import Style, resolve_style
from einsim.simulator.simulate import resolve_target
from einsim.units import format_rate

KIND_COLORS = {"gemm": 0, "attention": 1, "elementwise": 2}


def plot_layer(cost: Any, matmul_flops: float, hbm_bytes_per_s: float, *, style: Style | str | None = None) -> Figure:
    """`cost` is a ModelCost (einsim.simulator.model_estimate); the roofs are the target's
    matmul FLOP/s and HBM bytes/s for the model's dtype."""
    style = resolve_style(style)
    with drawing(style):
        return _draw(cost, matmul_flops, hbm_bytes_per_s, style)


def _draw(cost: Any, matmul_flops: float, hbm_bytes_per_s: float, style: Style) -> Figure:
    layer = cost.layer
    figure = new_figure(style.max_width if style.name == "paper" else 11.0, style.panel_height + 0.6, style)
    roof, share = figure.subplots(1, 2, width_ratios=(3, 2))
    points = [op for op in layer.operators if op.flops > 0 and op.time_s > 0 and op.hbm_bytes > 0]
    low = min([op.intensity for op in points] + [0.05]) / 2
    high = max([op.intensity for op in points] + [4 * matmul_flops / hbm_bytes_per_s]) * 2
    ridge = matmul_flops / hbm_bytes_per_s
    roof.plot([low, ridge, high], [low * hbm_bytes_per_s, matmul_flops, matmul_flops], color="#444444", linewidth=1.2,
              label=f"roof: {format_rate(matmul_flops, 'FLOP/s')}, {format_rate(hbm_bytes_per_s, 'B/s')}")
    groups: dict[tuple[float, float], list[Any]] = {}  # operators at one spot share a label
    for op in points:
        groups.setdefault((round(op.intensity, 6), round(op.flops / op.time_s, -6)), []).append(op)
    labels = []
    for ops in groups.values():
        op = ops[0]
        color = series_color(KIND_COLORS.get(op.kind, 3))
        roof.scatter([op.intensity], [op.flops / op.time_s], color=color, edgecolor="black", linewidth=0.4, zorder=3)
        labels.append(roof.annotate(", ".join(o.name for o in ops), (op.intensity, op.flops / op.time_s), xytext=(4, -3),
                                    textcoords="offset points", fontsize=style.tiny, ha="left", va="top"))
    for label in labels:  # right of the point, or left of it near the right edge
        if label.xy[0] > math.sqrt(low * high) * 3:
            label.set_ha("right")
            label.xyann = (-4, -3)
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlabel("operational intensity (FLOP per HBM byte)")
    roof.set_ylabel("attained FLOP/s (operator FLOP / its time)")
    roof.grid(True, which="major", color="#E4E4E4", linewidth=0.5)
    roof.legend(loc="lower right")
    names = [op.name for op in layer.operators]
    times = [op.time_s * 1e3 for op in layer.operators]
    share.barh(names, times, color=[series_color(KIND_COLORS.get(op.kind, 3)) for op in layer.operators],
               edgecolor="black", linewidth=0.4)
    share.invert_yaxis()
    share.set_xlabel("time (ms)")
    share.tick_params(axis="y", labelsize=style.tiny)
    share.set_title(f"one layer: {layer.time_s * 1e3:.3g} ms")
    figure.suptitle(f"{model_label(layer.model)} on {resolve_target(layer.target).label}, {layer.mode}, batch {layer.batch}, "
                    f"{'sequence' if layer.mode == 'prefill' else 'KV cache'} {layer.seq_len}")
    place_labels(figure, labels, leaders=labels)  # once the layout is final
    return figure

