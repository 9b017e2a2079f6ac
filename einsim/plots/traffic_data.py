"""The numbers behind a traffic-versus-buffer figure: off-chip traffic of each cascade as the
on-chip buffer grows, one target and one problem."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from einsim.problem import Problem
from einsim.simulator.simulate import resolve_cascade, resolve_target
from einsim.units import format_bytes


@dataclass(frozen=True)
class TrafficPoint:
    cascade: str
    buffer_capacity_bytes: float  # the on-chip level's capacity in this run
    traffic_bytes: float  # off-chip bytes predicted
    traffic_ratio: float  # traffic / compulsory traffic
    passes: int
    fits: bool
    spill_fraction: float  # of what the mapping keeps across passes, the part that does not fit
    latency_s: float
    energy_j: float


@dataclass(frozen=True)
class TrafficSteps:
    """Off-chip traffic of each cascade as the on-chip buffer grows (one target, one workload).

    A multi-pass cascade's curve steps down where what it keeps across passes starts to fit;
    `steps` lists those capacities (cascade -> [(capacity where traffic drops, traffic before,
    traffic after)])."""

    target: str
    level: str  # the on-chip level whose capacity is swept
    problem: Problem
    compulsory_bytes: float
    points: tuple[TrafficPoint, ...]
    steps: Mapping[str, tuple[tuple[float, float, float], ...]]
    notes: tuple[str, ...] = ()
    target_label: str = ""  # the target's display name, for titles (the target's name when empty)

    def curve(self, cascade: str) -> list[TrafficPoint]:
        return sorted((p for p in self.points if p.cascade == cascade), key=lambda p: p.buffer_capacity_bytes)

    def rows(self) -> list[dict[str, Any]]:
        return [{"target": self.target, "level": self.level, "workload": self.problem.name,
                 "compulsory_bytes": self.compulsory_bytes, **p.__dict__} for p in self.points]


def traffic_steps(cascades: Sequence[Any], problem: Problem, target: Any,
                  capacities: Sequence[float] | None = None, mapping: Any = None) -> TrafficSteps:
    """The simulator's buffer sweep (einsim.simulator.sweep.buffer_sweep) of each cascade, and
    where each curve steps down by more than 1 %."""
    from einsim.einsum_cascades.passes import analyze_passes
    from einsim.simulator.sweep import buffer_sweep

    target = resolve_target(target)
    points = []
    notes = []
    compulsory = math.nan
    for cascade in cascades:
        cascade = resolve_cascade(cascade)
        passes = analyze_passes(cascade).passes
        rows = buffer_sweep(cascade, problem, target, mapping=mapping, capacities=capacities)
        unmapped = [row["buffer_bytes"] for row in rows if not math.isfinite(row["traffic_bytes"])]
        if unmapped:
            notes.append(f"{cascade.name}: no mapping fits in {format_bytes(max(unmapped))} or less (not drawn)")
        for row in rows:
            if not math.isfinite(row["traffic_bytes"]):
                continue
            compulsory = row["traffic_bytes"] / row["traffic_over_compulsory"]
            points.append(TrafficPoint(
                cascade=cascade.name, buffer_capacity_bytes=row["buffer_bytes"], traffic_bytes=row["traffic_bytes"],
                traffic_ratio=row["traffic_over_compulsory"], passes=passes, fits=row["fits"],
                spill_fraction=row["spill_fraction"], latency_s=row["latency_s"], energy_j=row["energy_j"]))
    steps = {}
    for name in dict.fromkeys(p.cascade for p in points):
        curve = sorted((p for p in points if p.cascade == name), key=lambda p: p.buffer_capacity_bytes)
        steps[name] = tuple((b.buffer_capacity_bytes, a.traffic_bytes, b.traffic_bytes)
                            for a, b in zip(curve, curve[1:]) if b.traffic_bytes < a.traffic_bytes * 0.99)
    return TrafficSteps(target=target.name, level=target.memory_levels[-2].name, problem=problem,
                        compulsory_bytes=compulsory, points=tuple(points), steps=steps, notes=tuple(notes),
                        target_label=target.label)
