"""Draws off-chip traffic against on-chip buffer capacity, one curve per cascade: a multi-pass
cascade steps down where what it keeps across passes starts to fit, a 1-pass one is flat at the
compulsory traffic once its tiles fit (docs/plots.md § Traffic against buffer). Sizes and traffic
are in binary units (KiB, MiB, GiB), as everywhere in einsim; a curve that rises where the buffer
grows says why on the figure (the mapping is re-chosen for the least latency first)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from einsim.plots.figure import drawing, new_figure, series_color
from einsim.plots.names import passes_label, workload_label
from einsim.plots.style import Style, resolve_style
from einsim.plots.traffic_data import TrafficPoint, TrafficSteps
from einsim.simulator.simulate import resolve_target
from einsim.units import format_bytes

GIB = 2.0**30


def plot_traffic_vs_buffer(data: TrafficSteps | Sequence[TrafficSteps], *, annotate: bool = True,
                           style: Style | str | None = None) -> Figure:
    """One panel per TrafficSteps (a target), side by side, sharing the traffic axis; the legend
    sits under the panels."""
    panels = [data] if isinstance(data, TrafficSteps) else list(data)
    if not panels:
        raise ValueError("plot_traffic_vs_buffer needs at least one TrafficSteps")
    style = resolve_style(style)
    with drawing(style):
        figure = new_figure(style.width(len(panels), 0.8 if style.name == "screen" else 0.0), style.panel_height + 1.2, style)
        axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
        for i, (axis, panel) in enumerate(zip(axes, panels)):
            _draw_panel(axis, panel, annotate, style, last=i == len(panels) - 1)
            if i:
                axis.set_ylabel("")
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncol=1 if style.legend_below and len(panels) == 1 else 2,
                      frameon=False)
        workloads = list(dict.fromkeys(workload_label(p.problem) for p in panels))
        figure.suptitle("; ".join(workloads))
    return figure


def _draw_panel(axis: Any, data: TrafficSteps, annotate: bool, style: Style, last: bool) -> None:
    capacities = sorted({p.buffer_capacity_bytes for p in data.points})
    for i, cascade in enumerate(dict.fromkeys(p.cascade for p in data.points)):
        curve = data.curve(cascade)
        color = series_color(i)
        x = [p.buffer_capacity_bytes for p in curve]
        y = [p.traffic_bytes / GIB for p in curve]
        passes = curve[-1].passes if curve else 0
        # Traffic holds from one sampled capacity up to the next: a step after each sample.
        axis.step(x, y, where="post", color=color, linewidth=style.line, label=f"{cascade} ({passes_label(passes)})")
        axis.scatter(x, y, s=0.2 * style.marker, color=color, zorder=4)
        if annotate and passes > 1 and data.steps.get(cascade):
            # The largest drop: for a multi-pass cascade, where what it keeps across passes fits.
            capacity, before, after = max(data.steps[cascade], key=lambda step: step[1] / step[2])
            axis.annotate(f"{before / data.compulsory_bytes:.3g}x → {after / data.compulsory_bytes:.3g}x\n"
                          f"at {format_bytes(capacity)}", (capacity, math.sqrt(before * after) / GIB),
                          xytext=(4, 0), textcoords="offset points", fontsize=style.tiny, color=color,
                          va="center", ha="left")
        rise = _first_rise(curve)
        if annotate and rise is not None:
            axis.annotate("traffic rises here: at each size the mapping\nis re-chosen for least latency, then traffic",
                          (rise.buffer_capacity_bytes, rise.traffic_bytes / GIB), xytext=(-4, 16),
                          textcoords="offset points", fontsize=style.tiny, color=color, ha="left", va="bottom",
                          arrowprops={"arrowstyle": "->", "color": color, "linewidth": 0.6, "shrinkA": 1, "shrinkB": 2})
    axis.axhline(data.compulsory_bytes / GIB, color="#444444", linestyle=":", linewidth=0.6 * style.line,
                 label=f"compulsory traffic (Q, K, V read, O written once): {format_bytes(data.compulsory_bytes)}")
    target = resolve_target(data.target)
    try:
        level = target.memory(data.level)
        axis.axvline(level.capacity_bytes, color="#999999", linestyle="--", linewidth=0.5 * style.line,
                     label=f"{target.label}'s {data.level}: {format_bytes(level.capacity_bytes)}")
    except KeyError:
        pass
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    highest = max((p.traffic_bytes for p in data.points), default=data.compulsory_bytes)
    axis.set_ylim(data.compulsory_bytes / GIB / 1.6, highest / GIB * 5)  # room for the notes above the curves
    if capacities:
        every = 2 if style.legend_below is False else 4  # powers of 4 on screen, of 16 on paper
        ticks = [c for c in capacities if math.log2(c).is_integer() and int(math.log2(c)) % every == 0]
        axis.xaxis.set_major_locator(FixedLocator(ticks or capacities[:: max(1, len(capacities) // 6)]))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_bytes(v)))
    axis.set_xlabel(f"On-chip buffer capacity ({data.level})")
    axis.set_ylabel("Off-chip traffic (GiB)")
    if last:  # the ratio axis once, at the right of the last panel
        compulsory = data.compulsory_bytes / GIB
        right = axis.secondary_yaxis("right", functions=(lambda v: v / compulsory, lambda r: r * compulsory))
        right.set_ylabel("× compulsory traffic")
    axis.set_title(target.label)
    axis.grid(True, which="major", color="#E4E4E4", linewidth=0.6)


def _first_rise(curve: Sequence[TrafficPoint]) -> TrafficPoint | None:
    """The first point whose traffic exceeds the one before it by more than 1 %: a larger buffer
    admitted a faster mapping that moves more bytes."""
    return next((b for a, b in zip(curve, curve[1:]) if b.traffic_bytes > a.traffic_bytes * 1.01), None)
