"""The numbers behind a roofline figure (RooflineData): the target's roofs, the exp and vector
roofs of each cascade's operation mix, one point per estimate (and per Einsum), measured runs
beside them. docs/plots.md § Roofline says what each roof's FLOP/s means."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from einsim.errors import ConfigError
from einsim.problem import Problem
from einsim.simulator.estimate import Estimate
from einsim.simulator.simulate import resolve_cascade, resolve_target
from einsim.units import format_rate
from einsim.plots.roofs import (
    WORK_CONVENTION,
    Roof,
    RooflinePoint,
    _finite,
    attention_flops,
    lowest_roof,
    merge_roofs,
    resource_role,
    target_roofs,
)


@dataclass(frozen=True)
class RooflineData:
    """Everything one roofline figure (one target) shows."""

    target: str
    description: str
    kind: str  # gpu | spatial
    dtype: str
    problem: Problem | None
    roofs: tuple[Roof, ...]
    points: tuple[RooflinePoint, ...]
    work: str = WORK_CONVENTION
    notes: tuple[str, ...] = ()
    target_label: str = ""  # the target's display name, for titles (the target's name when empty)

    def roof(self, role: str, cascade: str | None = None, level: str | None = None) -> Roof:
        """The roof of a role ("matmul", "exp", ...); for exp/vector roofs, the cascade's."""
        for roof in self.roofs:
            if roof.role != role or (level is not None and roof.level != level):
                continue
            if cascade is None or not roof.cascades or cascade in roof.cascades:
                return roof
        raise KeyError(f"{self.target}: no {role} roof" + (f" for {cascade}" if cascade else ""))

    def point(self, name: str, einsum: str | None = None, origin: str | None = None) -> RooflinePoint:
        for point in self.points:
            if point.name == name and point.einsum == einsum and (origin is None or point.origin == origin):
                return point
        raise KeyError(f"{self.target}: no point {name}" + (f"/{einsum}" if einsum else ""))

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per roof and per point (`record` says which)."""
        rows: list[dict[str, Any]] = []
        for roof in self.roofs:
            rows.append({
                "record": "roof", "target": self.target, "dtype": self.dtype, "role": roof.role,
                "resource": roof.resource, "label": roof.label, "peak": roof.peak,
                "peak_unit": roof.peak_unit, "source": roof.source, "flop_per_op": roof.flop_per_op,
                "roof_flops_per_s": roof.flops_per_s, "ridge_flop_per_byte": roof.ridge_intensity,
                "cascades": " ".join(roof.cascades),
            })
        for point in self.points:
            rows.append({
                "record": "point", "target": self.target, "dtype": self.dtype, "origin": point.origin,
                "label": point.label, "name": point.name, "einsum": point.einsum or "",
                "workload": point.problem_label, "flops": point.flops, "traffic_bytes": point.traffic_bytes,
                "time_s": point.time_s, "intensity_flop_per_byte": point.intensity,
                "flops_per_s": point.flops_per_s, "bound": point.bound, "bound_role": point.bound_role,
                "attainable_flops_per_s": point.attainable_flops_per_s,
                "limiting_roof": point.limiting_roof, "detail": point.detail,
            })
        return rows


@dataclass(frozen=True)
class OperationMix:
    """The operations a simulated cascade puts on each kind of unit (from the Estimate's
    per-Einsum rows and their binding): what the exp and vector roofs are derived from."""

    macs: float = 0.0  # multiply-accumulates of contractions (matrix unit)
    exps: float = 0.0
    vector_ops: float = 0.0  # everything else on a vector unit / GPU CUDA cores / beside an exp unit
    array_ops: float = 0.0  # other operations a spatial matrix array runs (FuseMax's LM, SLD)
    per_einsum: Mapping[str, "OperationMix"] = field(default_factory=dict)


def operation_mix(estimate: Estimate, target: Any) -> OperationMix:
    """Split each Einsum's operations by the unit that executes them.

    exp -> the exp unit (whatever implements it); "mac", or mul (with its add) of an Einsum bound
    to a matrix unit -> matmul; anything else -> the vector unit, except on a spatial matrix array,
    whose PEs run their own non-MAC operations (on a GPU, tensor cores only multiply-accumulate).
    """
    units = target.compute_units
    per: dict[str, OperationMix] = {}
    for row in estimate.per_einsum:
        unit = units.get(row.unit)
        on_matrix = unit is not None and (unit.kind == "matrix" or (unit.kind == "exp" and unit.via
                                                                     and units[unit.via].kind == "matrix"))
        ops = row.compute_ops
        macs = exps = vector = array = 0.0
        counts_macs = "mac" in ops
        for kind, count in ops.items():
            count = float(count)
            if kind == "exp":
                exps += count
            elif kind == "mac":
                macs += count
            elif on_matrix and not counts_macs and kind == "mul" and unit.kind == "matrix":
                macs += count
            elif on_matrix and not counts_macs and kind == "add" and "mul" in ops and unit.kind == "matrix":
                continue  # the accumulate half of the MACs counted above
            elif on_matrix and target.kind == "spatial":
                array += count
            else:
                vector += count
        per[row.einsum] = OperationMix(macs=macs, exps=exps, vector_ops=vector, array_ops=array)
    return OperationMix(
        macs=sum(m.macs for m in per.values()), exps=sum(m.exps for m in per.values()),
        vector_ops=sum(m.vector_ops for m in per.values()), array_ops=sum(m.array_ops for m in per.values()),
        per_einsum=per)


def cascade_roofs(target: Any, dtype: str, mix: OperationMix, work_flops: float, cascade: str,
                  source: str = "measured") -> list[Roof]:
    """The exp and vector roofs for one cascade: the unit's peak times the attention FLOPs
    credited per operation it runs for this cascade (work_flops / its operation count)."""
    target = resolve_target(target)
    roofs = []
    for role, kind, count, unit_name in (("exp", "exp", mix.exps, "exp/s"),
                                         ("vector", "vector", mix.vector_ops, "op/s")):
        if count <= 0 or not target.units_of_kind(kind):
            continue
        unit = target.unit(kind)
        # The exp unit's throughput is architectural (SFUs, an exp unit per PE, or MACs via the
        # array); no preset measures it, so any source falls through to derived there.
        peak, used = target.peak_ops_per_s(unit, dtype, source)
        per_op = work_flops / count
        shown = resource_role(target, unit.name) if role == "vector" else "exp"
        roofs.append(Roof(
            target=target.name, kind="compute", role=shown, resource=unit.name,
            label=f"{shown} ({unit.name}): {format_rate(peak, unit_name)} x {per_op:.4g} FLOP/op "
                  f"= {peak * per_op / 1e12:.4g} TFLOP/s",
            peak=peak, peak_unit=unit_name, source=used, flop_per_op=per_op,
            flops_per_s=peak * per_op, cascades=(cascade,)))
    return roofs


def roofline_data(target: Any, estimates: Sequence[Estimate], *, source: str = "measured",
                  per_einsum: bool = False, measured: Sequence[Any] = (),
                  measured_match: str = "shape") -> RooflineData:
    """The roofline of `target` with each estimate (one per cascade, one shared workload) placed
    by its operational intensity and predicted performance, plus measured runs
    (measured.MeasuredRun) of the same attention problem (measured_match: shape | lengths | all)."""
    from einsim.plots.measured import measured_points

    target = resolve_target(target)
    problems = {e.problem for e in estimates}
    if len(problems) > 1:
        raise ConfigError("a roofline places cascades of one workload; got "
                          + ", ".join(sorted(w.name or str(w) for w in problems)))
    problem = next(iter(problems)) if problems else None
    for estimate in estimates:
        if estimate.target != target.name:
            raise ConfigError(f"estimate of {estimate.cascade} is for target {estimate.target}, not {target.name}")
    dtype = problem.dtype if problem else target.default_dtype
    roofs = target_roofs(target, dtype, source)
    works = {e.cascade: attention_flops(problem, getattr(e, "visible_pairs", None)) if problem else 0.0
             for e in estimates}
    mixes = {e.cascade: operation_mix(e, target) for e in estimates}
    extra: list[Roof] = []
    for estimate in estimates:
        extra += cascade_roofs(target, dtype, mixes[estimate.cascade], works[estimate.cascade], estimate.cascade, source)
    roofs += merge_roofs(extra)
    notes = []
    if target.kind == "spatial" and any(m.array_ops for m in mixes.values()):
        notes.append("operations other than MACs bound to the 2D array (and exps computed on it) share it "
                     "with the matmuls: the point sits below the matmul and exp roofs together")

    points: list[RooflinePoint] = []
    for estimate in estimates:
        work = works[estimate.cascade]
        points.append(_predicted_point(target, roofs, estimate, None, work, estimate.traffic_bytes, estimate.latency_s))
        if per_einsum:
            mix = mixes[estimate.cascade]
            exp_per_op = work / mix.exps if mix.exps else 0.0
            vector_per_op = work / mix.vector_ops if mix.vector_ops else 0.0
            for row in estimate.per_einsum:
                part = mix.per_einsum.get(row.einsum, OperationMix())
                flops = 2.0 * (part.macs + part.array_ops) + exp_per_op * part.exps + vector_per_op * part.vector_ops
                points.append(_predicted_point(target, roofs, estimate, row.einsum, flops, row.traffic_bytes,
                                               row.latency_s, row.unit))
    if problem is not None:
        found, skipped = measured_points(measured, problem, target, roofs, match=measured_match,
                                         cascades=[e.cascade for e in estimates])
        points += found
        if skipped:
            notes.append(skipped)
    return RooflineData(
        target=target.name, description=target.description, kind=target.kind, dtype=dtype,
        problem=problem, roofs=tuple(roofs), points=tuple(points), notes=tuple(notes), target_label=target.label)


def _predicted_point(target: Any, roofs: Sequence[Roof], estimate: Estimate, einsum: str | None, flops: float,
                     traffic: float, time_s: float, bound: str | None = None) -> RooflinePoint:
    intensity = _finite(flops / traffic) if traffic > 0 else None
    bound = bound or estimate.bound
    attainable, limiting = lowest_roof(roofs, intensity, estimate.cascade)
    label = estimate.cascade + (f" / {einsum}" if einsum else "")
    detail = "" if estimate.fits else "does not fit on chip"
    return RooflinePoint(
        target=target.name, origin="predicted", label=label, name=estimate.cascade, einsum=einsum,
        flops=flops, traffic_bytes=traffic, time_s=time_s, intensity=intensity,
        flops_per_s=flops / time_s if time_s > 0 else 0.0, bound=bound,
        bound_role=resource_role(target, bound), attainable_flops_per_s=attainable,
        limiting_roof=limiting, problem_label=estimate.problem.name or "", detail=detail)


def simulate_each(cascades: Sequence[Any], problem: Problem, target: Any, mapping: Any = None) -> list[Estimate]:
    """One Estimate per cascade (the simulator's dispatch on the target's kind)."""
    from einsim.simulator.simulate import simulate

    target = resolve_target(target)
    return [simulate(resolve_cascade(c), problem, target, mapping) for c in cascades]


def roofline_for(targets: Sequence[Any], cascades: Sequence[Any], problem: Problem, *, mapping: Any = None,
                 **options: Any) -> list[RooflineData]:
    """roofline_data for each target, simulating every cascade on it."""
    out = []
    for target in targets:
        target = resolve_target(target)
        out.append(roofline_data(target, simulate_each(cascades, problem, target, mapping), **options))
    return out
