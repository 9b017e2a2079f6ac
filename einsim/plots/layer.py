"""Draws one transformer layer: every operator on the target's roofline (its FLOP per HBM byte
against the FLOP/s it attains) and the share of the layer's time each takes."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from einsim.plots.figure import new_figure, series_color

KIND_COLORS = {"gemm": 0, "attention": 1, "elementwise": 2}


def plot_layer(cost: Any, matmul_flops: float, hbm_bytes_per_s: float) -> Figure:
    """`cost` is a ModelCost (einsim.simulator.model_estimate); the roofs are the target's
    matmul FLOP/s and HBM bytes/s for the model's dtype."""
    layer = cost.layer
    figure = new_figure(11.0, 4.6)
    roof, share = figure.subplots(1, 2, width_ratios=(3, 2))
    points = [op for op in layer.operators if op.flops > 0 and op.time_s > 0 and op.hbm_bytes > 0]
    low = min([op.intensity for op in points] + [0.05]) / 2
    high = max([op.intensity for op in points] + [4 * matmul_flops / hbm_bytes_per_s]) * 2
    ridge = matmul_flops / hbm_bytes_per_s
    roof.plot([low, ridge, high], [low * hbm_bytes_per_s, matmul_flops, matmul_flops], color="#444444", linewidth=1.2,
              label=f"roof: {matmul_flops / 1e12:.0f} TFLOP/s, {hbm_bytes_per_s / 1e12:.2f} TB/s")
    for op in points:
        color = series_color(KIND_COLORS.get(op.kind, 3))
        roof.scatter([op.intensity], [op.flops / op.time_s], color=color, edgecolor="black", linewidth=0.4, zorder=3)
        roof.annotate(op.name, (op.intensity, op.flops / op.time_s), xytext=(4, 3), textcoords="offset points",
                      fontsize=7)
    roof.set_xscale("log")
    roof.set_yscale("log")
    roof.set_xlabel("operational intensity (FLOP per HBM byte)")
    roof.set_ylabel("attained FLOP/s (operator FLOP / its time)")
    roof.grid(True, which="both", color="#EEEEEE", linewidth=0.5)
    roof.legend(loc="lower right", fontsize=8)
    names = [op.name for op in layer.operators]
    times = [op.time_s * 1e3 for op in layer.operators]
    share.barh(names, times, color=[series_color(KIND_COLORS.get(op.kind, 3)) for op in layer.operators],
               edgecolor="black", linewidth=0.4)
    share.invert_yaxis()
    share.set_xlabel("time (ms)")
    share.tick_params(axis="y", labelsize=8)
    share.set_title(f"one layer: {layer.time_s * 1e3:.3g} ms", fontsize=9)
    figure.suptitle(f"{layer.model} on {layer.target}, {layer.mode}, batch {layer.batch}, "
                    f"{'sequence' if layer.mode == 'prefill' else 'KV cache'} {layer.seq_len}", fontsize=10)
    return figure
