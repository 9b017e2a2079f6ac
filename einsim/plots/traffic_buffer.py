"""Draws off-chip traffic against on-chip buffer capacity, one curve per cascade: a multi-pass
cascade steps down where what it keeps across passes starts to fit, a 1-pass one is flat at the
compulsory traffic once its tiles fit (docs/plots.md § Traffic against buffer)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from einsim.simulator.simulate import resolve_target
from einsim.plots.traffic_data import TrafficSteps
from einsim.plots.figure import new_figure, series_color
from einsim.units import format_bytes


def plot_traffic_vs_buffer(data: TrafficSteps | Sequence[TrafficSteps], *, annotate: bool = True) -> Figure:
    """One panel per TrafficSteps (a target), side by side."""
    panels = [data] if isinstance(data, TrafficSteps) else list(data)
    if not panels:
        raise ValueError("plot_traffic_vs_buffer needs at least one TrafficSteps")
    figure = new_figure(7.0 * len(panels), 4.6)
    for axis, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        _draw_panel(axis, panel, annotate)
    return figure


def _draw_panel(axis: Any, data: TrafficSteps, annotate: bool) -> None:
    capacities = sorted({p.buffer_capacity_bytes for p in data.points})
    for i, cascade in enumerate(dict.fromkeys(p.cascade for p in data.points)):
        curve = data.curve(cascade)
        color = series_color(i)
        x = [p.buffer_capacity_bytes for p in curve]
        y = [p.traffic_bytes / 1e9 for p in curve]
        passes = curve[-1].passes if curve else 0
        # Traffic holds from one sampled capacity up to the next: a step after each sample.
        axis.step(x, y, where="post", color=color, linewidth=2, label=f"{cascade} ({passes} pass{'es' * (passes != 1)})")
        axis.scatter(x, y, s=14, color=color, zorder=4)
        if annotate and passes > 1 and data.steps.get(cascade):
            # The largest drop: for a multi-pass cascade, where what it keeps across passes fits.
            capacity, before, after = max(data.steps[cascade], key=lambda step: step[1] / step[2])
            axis.annotate(f"{before / data.compulsory_bytes:.3g}x → {after / data.compulsory_bytes:.3g}x "
                          f"at {format_bytes(capacity)}", (capacity, before / 1e9), xytext=(5, 2),
                          textcoords="offset points", fontsize=7, color=color)
    axis.axhline(data.compulsory_bytes / 1e9, color="#444444", linestyle=":", linewidth=1.2,
                 label=f"compulsory (Q, K, V read, O written once): {data.compulsory_bytes / 1e9:.3g} GB")
    target = resolve_target(data.target)
    try:
        level = target.memory(data.level)
        axis.axvline(level.capacity_bytes, color="#999999", linestyle="--", linewidth=1,
                     label=f"{data.target} {data.level}: {format_bytes(level.capacity_bytes)}")
    except KeyError:
        pass
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    if capacities:
        ticks = [c for c in capacities if math.log2(c).is_integer() and int(math.log2(c)) % 2 == 0]
        axis.xaxis.set_major_locator(FixedLocator(ticks or capacities[:: max(1, len(capacities) // 6)]))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_bytes(v)))
    axis.set_xlabel(f"On-chip buffer capacity ({data.level})")
    axis.set_ylabel("Off-chip traffic (GB)")
    compulsory = data.compulsory_bytes / 1e9
    right = axis.secondary_yaxis("right", functions=(lambda v: v / compulsory, lambda r: r * compulsory))
    right.set_ylabel("x compulsory traffic")
    axis.set_title(f"{data.target} — {data.problem.name}", fontsize=10)
    axis.grid(True, which="major", color="#DDDDDD", linewidth=0.6)
    axis.legend(fontsize=7, loc="upper right")
