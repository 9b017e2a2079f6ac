"""A roofline's roofs and points and the conventions they share: what work a point is
credited with (WORK_CONVENTION), the target's own roofs (matmul, memory levels), the lowest roof
at an intensity. Used by roofline_data.py and by measured.py for measured points."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from einsim.problem import Problem
from einsim.simulator.simulate import resolve_target
from einsim.units import format_rate


# What the y axis counts (docs/plots.md § Roofline). Shown in every figure's JSON.
WORK_CONVENTION = (
    "attention FLOPs: 2·(E+F) FLOP per visible (query, key) pair (QKᵀ and P·V as FlashAttention "
    "counts them; visible under the problem's mask and the cascade's own filters), the same work for "
    "every cascade of a workload with the same mask; exp and vector roofs are that "
    "work divided by the time the unit alone needs for the cascade's exps / vector operations"
)


def attention_flops(problem: Problem, visible_pairs: float | None = None) -> float:
    """The work a roofline point of this workload is credited with (WORK_CONVENTION): the
    problem's visible pairs, or the pairs a cascade's own filters keep with it (an Estimate's
    `visible_pairs`: sinks + window, packed documents, a block mask)."""
    if visible_pairs is not None:
        return float(visible_pairs) * 2 * (problem.head_dim + problem.v_head_dim)
    return problem.forward_flops()


def resource_role(target: Any, resource: str) -> str:
    """What a unit or memory level is, in the words of a roofline's annotations:
    memory / matmul / exp / 1D array (spatial) or vector (GPU) / launch."""
    units = target.compute_units
    if resource in units:
        kind = units[resource].kind
        if kind == "matrix":
            return "matmul"
        if kind == "exp":
            return "exp"
        return "1D array" if target.kind == "spatial" else "vector"
    if any(level.name == resource for level in target.memory_levels):
        return "memory"
    return resource


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class Roof:
    """One ceiling of a roofline.

    Compute roofs are horizontal at `flops_per_s` = `peak` (the unit's own operations per second:
    MAC/s, op/s, exp/s) x `flop_per_op` (attention FLOPs credited per such operation). Memory roofs
    are diagonal: `peak` bytes/s x operational intensity.
    """

    target: str
    kind: str  # "compute" | "memory"
    role: str  # "matmul" | "exp" | "vector" | "1D array" | "memory"
    resource: str  # the unit or memory level's name in the target
    label: str
    peak: float  # in peak_unit
    peak_unit: str  # "MAC/s" | "op/s" | "exp/s" | "B/s"
    source: str  # measured | datasheet | derived (Target.peak_ops_per_s / MemoryLevel.bandwidth)
    flop_per_op: float | None = None  # compute roofs
    flops_per_s: float | None = None  # compute roofs: the height of the roof
    ridge_intensity: float | None = None  # memory roofs: FLOP/byte where it meets the matmul roof
    level: str = ""  # memory roofs: "off-chip" | "on-chip"
    cascades: tuple[str, ...] = ()  # roofs whose height depends on the cascade's operation mix

    def attainable(self, intensity: float) -> float:
        """FLOP/s this roof allows at `intensity` FLOP per off-chip byte."""
        if self.kind == "memory":
            return self.peak * intensity
        return float(self.flops_per_s or 0.0)


@dataclass(frozen=True)
class RooflinePoint:
    """A cascade (or one Einsum, or a measured kernel) placed on a roofline."""

    target: str
    origin: str  # "predicted" | "measured" | "tuned"
    label: str  # legend text
    name: str  # cascade name, or the measured backend / kernel
    einsum: str | None  # the Einsum of a per-Einsum point
    flops: float  # work credited (WORK_CONVENTION)
    traffic_bytes: float  # off-chip bytes (predicted: the simulator's; measured: compulsory)
    time_s: float
    intensity: float | None  # FLOP per off-chip byte (None: no off-chip traffic)
    flops_per_s: float
    bound: str  # what limits it (the simulator's unit / memory level; "" for measurements)
    bound_role: str  # memory | matmul | exp | 1D array | vector | launch
    attainable_flops_per_s: float | None  # the lowest roof at its intensity
    limiting_roof: str  # that roof's label
    problem_label: str  # the problem's label (model/mode/length, or its shape)
    detail: str = ""  # shape of a measured run, buffer fit of a prediction, ...


def target_roofs(target: Any, dtype: str, source: str = "measured") -> list[Roof]:
    """The roofs that do not depend on the cascade: matmul on the matrix unit, the off-chip
    memory (HBM/DRAM) and the shared on-chip level in front of it (L2 / global buffer)."""
    target = resolve_target(target)
    matrix = target.unit("matrix")
    macs, used = target.peak_ops_per_s(matrix, dtype, source)
    matmul_flops = 2.0 * macs
    roofs = [Roof(
        target=target.name, kind="compute", role="matmul", resource=matrix.name,
        label=f"matmul ({matrix.name}, {dtype}): {matmul_flops / 1e12:.4g} TFLOP/s",
        peak=macs, peak_unit="MAC/s", source=used, flop_per_op=2.0, flops_per_s=matmul_flops)]
    levels = list(target.memory_levels)
    for level, where in ((levels[-1], "off-chip"), (levels[-2], "on-chip")):
        bandwidth = level.bandwidth(source)
        measured = source == "measured" and level.measured_bandwidth_bytes_per_s is not None
        roofs.append(Roof(
            target=target.name, kind="memory", role="memory", resource=level.name,
            label=f"{level.name} ({where}): {format_rate(bandwidth, 'B/s')}",
            peak=bandwidth, peak_unit="B/s", source="measured" if measured else "datasheet",
            ridge_intensity=matmul_flops / bandwidth, level=where))
    return roofs


def merge_roofs(roofs: Iterable[Roof], tolerance: float = 0.01) -> list[Roof]:
    """Cascade-dependent roofs of the same unit within `tolerance` of each other become one line
    (named after every cascade it stands for); others are kept."""
    merged: list[Roof] = []
    for roof in roofs:
        for i, kept in enumerate(merged):
            if (roof.cascades and kept.cascades and kept.role == roof.role and kept.resource == roof.resource
                    and abs(kept.flops_per_s - roof.flops_per_s) <= tolerance * kept.flops_per_s):
                merged[i] = replace(kept, cascades=kept.cascades + roof.cascades)
                break
        else:
            merged.append(roof)
    return merged


def lowest_roof(roofs: Sequence[Roof], intensity: float | None, cascade: str | None) -> tuple[float | None, str]:
    """(FLOP/s, label) of the lowest roof at `intensity` among the compute roofs that apply to the
    cascade and the off-chip memory roof (the on-chip line is where the point could be, not a bound
    on x measured in off-chip bytes; no off-chip traffic: no memory bound)."""
    best: tuple[float | None, str] = (None, "")
    for roof in roofs:
        if roof.cascades and cascade not in roof.cascades:
            continue
        if roof.kind == "memory" and (roof.level != "off-chip" or intensity is None):
            continue
        value = roof.attainable(intensity)
        if best[0] is None or value < best[0]:
            best = (value, roof.label)
    return best
