"""Draws the FuseMax paper's style of comparison: grouped bars of speedup (top) and energy (bottom)
of each design relative to a baseline, per model and sequence length, with the geometric mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from einsim.plots.figure import drawing, new_figure, series_color
from einsim.plots.speedup_data import PAPER_DESIGNS, Design, SpeedupData, speedup_data
from einsim.plots.names import model_label
from einsim.plots.style import Style, resolve_style


def length_text(n: int) -> str:
    """4096 -> '4K', 1048576 -> '1M'."""
    if n >= 2**20 and n % 2**20 == 0:
        return f"{n // 2**20}M"
    if n >= 2**10 and n % 2**10 == 0:
        return f"{n // 2**10}K"
    return str(n)


def plot_speedup(data: SpeedupData, *, log_speedup: bool = True, style: Style | str | None = None) -> Figure:
    """Speedup (top) and energy (bottom) bars per design, model and length, sharing the x axis."""
    style = resolve_style(style)
    with drawing(style):
        return _draw(data, log_speedup, style)


def _draw(data: SpeedupData, log_speedup: bool, style: Style) -> Figure:
    groups = data.groups()
    designs = [d.label for d in data.designs]
    per_bar = 0.15 if style.name == "screen" else 0.07
    width = min(style.max_width, max(style.panel_width, 1.5 + per_bar * (len(groups) + 1) * max(2, len(designs))))
    figure = new_figure(width, style.panel_height * 1.3, style)
    top, bottom = figure.subplots(2, 1, sharex=True)
    width = 0.8 / len(designs)
    positions = list(range(len(groups) + 1))  # the last slot is the geometric mean
    for j, design in enumerate(designs):
        offset = (j - (len(designs) - 1) / 2) * width
        speedups = [data.row(model, n, design).speedup for model, n in groups] + [data.geomean(design)]
        energies = [data.row(model, n, design).energy_ratio for model, n in groups] + [data.geomean(design, "energy_ratio")]
        color = series_color(j)
        top.bar([p + offset for p in positions], speedups, width, color=color, label=design, edgecolor="black", linewidth=0.4)
        bottom.bar([p + offset for p in positions], energies, width, color=color, edgecolor="black", linewidth=0.4)
    for axis in (top, bottom):
        axis.axhline(1.0, color="#444444", linewidth=0.8)
        axis.grid(True, axis="y", color="#DDDDDD", linewidth=0.6)
        axis.set_axisbelow(True)
    if log_speedup:
        top.set_yscale("log")
        top.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        top.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    top.set_ylabel(f"Speedup over {data.baseline}")
    bottom.set_ylabel(f"Energy / {data.baseline}")
    bottom.set_xticks(positions, [length_text(n) for _, n in groups] + ["geo-\nmean"], fontsize=style.tiny)
    # Model names under each model's run of sequence lengths.
    models = list(dict.fromkeys(model for model, _ in groups))
    for model in models:
        where = [i for i, (m, _) in enumerate(groups) if m == model]
        bottom.annotate(model_label(model), ((where[0] + where[-1]) / 2, 0), xycoords=("data", "axes fraction"),
                        xytext=(0, -(5.5 + 2.6 * style.tiny)), textcoords="offset points", ha="center", va="top",
                        fontsize=style.small,
                        fontweight="bold")
        if where[0] > 0:
            for axis in (top, bottom):
                axis.axvline(where[0] - 0.5, color="#BBBBBB", linewidth=0.8)
    for axis in (top, bottom):
        axis.axvline(len(groups) - 0.5, color="#888888", linewidth=0.8)
    # The geometric means, written out in the legend (beside the last group they crowd the bars).
    means = [f"{design}: {data.geomean(design):.3g}x, energy {data.geomean(design, 'energy_ratio'):.3g} (geomean)"
             for design in designs]
    figure.legend(handles=top.get_legend_handles_labels()[0], labels=means,
                  ncol=1 if style.name == "paper" else min(len(designs), 3), loc="outside upper right", frameon=False)
    figure.suptitle(f"Attention {data.mode}, simulated", x=0.02, ha="left")
    return figure


def speedup(models: Sequence[str], seq_lens: Sequence[int], designs: Sequence[Design] = PAPER_DESIGNS,
            **options: Any) -> Figure:
    return plot_speedup(speedup_data(models, seq_lens, designs, **options))
