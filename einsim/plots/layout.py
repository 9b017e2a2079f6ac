"""Labels that never overlap or leave their panel: after the layout is computed, labels placed
at data points (annotations with offsets in points) are moved the least distance up or down that
keeps them apart and inside their axes. The figures' test checks the result on every figure of
the gallery."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text

GAP_PX = 2.0  # pixels between two labels once separated
LEADER_PT = 15.0  # a label further than this from its point (points) is tied to it by a line


def place_labels(figure: Figure, labels: Sequence[Annotation], fixed: Sequence[Annotation] = (),
                 leaders: Sequence[Annotation] = ()) -> None:
    """Move each annotation of `labels` (its offset, in points) the least distance up or down so
    that it lies inside its axes and overlaps no label of the same axes placed before it: the
    `fixed` ones first (they stay where they are), then the others from the bottom up. Labels of
    different axes never meet, each staying inside its own. A label of `leaders` that ends up
    further than LEADER_PT from its point gets a thin line to it, so it still reads as that
    point's. Needs annotations whose `textcoords` are offset points."""
    labels = [label for label in labels if label.get_visible() and label.get_text()]
    if not labels:
        return
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    scale = 72.0 / figure.dpi  # pixels -> points
    by_axes: dict[object, list[Annotation]] = {}
    for label in labels:
        by_axes.setdefault(label.axes, []).append(label)
    for axes, group in by_axes.items():
        frame = axes.get_window_extent(renderer)
        boxes = {id(label): _box(label, renderer) for label in group}
        order = sorted(group, key=lambda lab: (lab not in fixed, boxes[id(lab)][1]))
        placed: list[list[float]] = []
        for label in order:
            box = boxes[id(label)]
            if label not in fixed:
                dx, dy = _free_spot(box, placed, frame)
                x, y = label.xyann
                label.xyann = (x + dx * scale, y + dy * scale)
                _shift(box, dx, dy)
            if label in leaders and math.hypot(*label.xyann) > LEADER_PT:
                axes.annotate("", xy=label.xy, xycoords=label.xycoords, xytext=label.xyann,
                              textcoords="offset points", zorder=label.get_zorder(),
                              arrowprops={"arrowstyle": "-", "color": label.get_color(), "linewidth": 0.5,
                                          "shrinkA": 0, "shrinkB": 4})
            placed.append(box)


def _box(label: Annotation, renderer) -> list[float]:
    extent = label.get_window_extent(renderer)
    return [extent.x0, extent.y0, extent.x1, extent.y1]


def _free_spot(box: list[float], placed: list[list[float]], frame) -> tuple[float, float]:
    """The smallest move (dx, dy), dx only to come inside the frame, that leaves `box` inside
    `frame` and clear of every placed box; the move inside the frame alone when nothing is clear."""
    dx = max(0.0, frame.x0 + GAP_PX - box[0]) - max(0.0, box[2] - frame.x1 + GAP_PX)
    low, high = frame.y0 + GAP_PX - box[1], frame.y1 - GAP_PX - box[3]  # allowed dy
    moved = [box[0] + dx, box[1], box[2] + dx, box[3]]
    candidates = [0.0] + [other[3] + GAP_PX - moved[1] for other in placed if _overlap_x(moved, other)]
    candidates += [other[1] - GAP_PX - moved[3] for other in placed if _overlap_x(moved, other)]
    inside = sorted((dy for dy in set(candidates) if low <= dy <= high), key=abs)
    for dy in inside:
        trial = [moved[0], moved[1] + dy, moved[2], moved[3] + dy]
        if not any(_overlap(trial, other) for other in placed):
            return dx, dy
    return dx, min(max(0.0, low), high) if low <= high else low


def _shift(box: list[float], dx: float, dy: float) -> None:
    box[0] += dx
    box[2] += dx
    box[1] += dy
    box[3] += dy


def _overlap_x(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] + GAP_PX and b[0] < a[2] + GAP_PX


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return _overlap_x(a, b) and a[1] < b[3] + GAP_PX - 0.01 and b[1] < a[3] + GAP_PX - 0.01


def text_problems(figure: Figure, tolerance_px: float = 0.5) -> list[str]:
    """What a reviewer would reject in a drawn figure's text: each visible, non-empty text artist
    (titles, axis and tick labels, legends, annotations) that leaves the figure, and each pair of
    them that overlap. Empty when the figure is clean; the figures' test and the gallery use it."""
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    frame = figure.bbox
    undrawn = _undrawn_tick_labels(figure)
    texts = []
    for text in figure.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        box = text.get_window_extent(renderer)
        if box.width <= 0 or box.height <= 0:
            continue
        texts.append((text, box))
    problems = []
    for text, box in texts:
        if (box.x0 < frame.x0 - tolerance_px or box.y0 < frame.y0 - tolerance_px
                or box.x1 > frame.x1 + tolerance_px or box.y1 > frame.y1 + tolerance_px):
            problems.append(f"{text.get_text()!r} leaves the figure ({_where(box)} outside {_where(frame)})")
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if width > tolerance_px and height > tolerance_px:
                problems.append(f"{a.get_text()!r} and {b.get_text()!r} overlap ({width:.0f} x {height:.0f} px)")
    return problems


def _undrawn_tick_labels(figure: Figure) -> set[int]:
    """Ids of the tick labels matplotlib keeps but does not draw: those of ticks outside the view
    limits, and every tick label of an axis that is off (a graph drawn without axes)."""
    kept, drawn = set(), set()
    for axes in figure.findobj(lambda artist: hasattr(artist, "xaxis") and hasattr(artist, "axison")):  # secondary axes too
        for axis in (axes.xaxis, axes.yaxis):
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            kept |= {id(label) for tick in ticks for label in (tick.label1, tick.label2)}
            if axes.axison and axis.get_visible():
                drawn |= {id(label) for tick in axis._update_ticks() for label in (tick.label1, tick.label2)}
    return kept - drawn


def _where(box) -> str:
    return f"[{box.x0:.0f}, {box.x1:.0f}] x [{box.y0:.0f}, {box.y1:.0f}] px"
