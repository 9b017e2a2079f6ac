"""The numbers behind every einsim plot, as frozen dataclasses: the roofs and points of a roofline,
traffic against on-chip buffer capacity, speedup and energy per design, the pass-coloured graph.

Plot modules only draw these; the tests check them. Every convention is written down in
docs/plots.md (§ Roofline: what "performance" means for each roof).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from einsim.errors import ConfigError, brief
from einsim.simulator.estimate import Estimate
from einsim.problem import Problem
from einsim.units import format_bytes, format_rate

# What the y axis counts (docs/plots.md § Roofline). Shown in every figure's JSON.
WORK_CONVENTION = (
    "attention FLOPs: 2·(E+F) FLOP per visible (query, key) pair (QKᵀ and P·V as FlashAttention "
    "counts them), the same work for every cascade of a workload; exp and vector roofs are that "
    "work divided by the time the unit alone needs for the cascade's exps / vector operations"
)


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

def as_target(target: Any) -> Any:
    """A Target from a preset name or YAML path (objects pass through)."""
    from einsim.simulator.simulate import resolve_target

    return resolve_target(target)


def as_cascade(cascade: Any) -> Any:
    """A Cascade from a library name or YAML path (objects pass through)."""
    from einsim.simulator.simulate import resolve_cascade

    return resolve_cascade(cascade)




def attention_flops(problem: Problem) -> float:
    """The work every roofline point of this workload is credited with (WORK_CONVENTION)."""
    return problem.forward_flops()


def resource_role(target: Any, resource: str) -> str:
    """What a unit or memory level is, in the words of a roofline's annotations:
    memory / matmul / exp / 1D array (spatial) or vector (GPU) / launch."""
    units = getattr(target, "compute_units", {})
    if resource in units:
        kind = units[resource].kind
        if kind == "matrix":
            return "matmul"
        if kind == "exp":
            return "exp"
        return "1D array" if target.kind == "spatial" else "vector"
    if any(level.name == resource for level in getattr(target, "memory_levels", ())):
        return "memory"
    return resource


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


# --------------------------------------------------------------------------------------------
# Roofline
# --------------------------------------------------------------------------------------------

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


def target_roofs(target: Any, dtype: str, source: str = "measured") -> list[Roof]:
    """The roofs that do not depend on the cascade: matmul on the matrix unit, the off-chip
    memory (HBM/DRAM) and the shared on-chip level in front of it (L2 / global buffer)."""
    target = as_target(target)
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


def cascade_roofs(target: Any, dtype: str, mix: OperationMix, work_flops: float, cascade: str,
                  source: str = "measured") -> list[Roof]:
    """The exp and vector roofs for one cascade: the unit's peak times the attention FLOPs
    credited per operation it runs for this cascade (work_flops / its operation count)."""
    target = as_target(target)
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


def roofline_data(target: Any, estimates: Sequence[Estimate], *, source: str = "measured",
                  per_einsum: bool = False, measured: Sequence[Any] = (),
                  measured_match: str = "shape") -> RooflineData:
    """The roofline of `target` with each estimate (one per cascade, one shared workload) placed
    by its operational intensity and predicted performance, plus measured runs
    (measured.MeasuredRun) of the same attention problem (measured_match: shape | lengths | all)."""
    from einsim.plots.measured import measured_points

    target = as_target(target)
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
    work = attention_flops(problem) if problem else 0.0
    mixes = {e.cascade: operation_mix(e, target) for e in estimates}
    extra: list[Roof] = []
    for estimate in estimates:
        extra += cascade_roofs(target, dtype, mixes[estimate.cascade], work, estimate.cascade, source)
    roofs += merge_roofs(extra)
    notes = []
    if target.kind == "spatial" and any(m.array_ops for m in mixes.values()):
        notes.append("operations other than MACs bound to the 2D array (and exps computed on it) share it "
                     "with the matmuls: the point sits below the matmul and exp roofs together")

    points: list[RooflinePoint] = []
    for estimate in estimates:
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
        found, skipped = measured_points(measured, problem, target, roofs, match=measured_match)
        points += found
        if skipped:
            notes.append(skipped)
    return RooflineData(
        target=target.name, description=target.description, kind=target.kind, dtype=dtype,
        problem=problem, roofs=tuple(roofs), points=tuple(points), notes=tuple(notes))


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

    target = as_target(target)
    return [simulate(as_cascade(c), problem, target, mapping) for c in cascades]


def roofline_for(targets: Sequence[Any], cascades: Sequence[Any], problem: Problem, *, mapping: Any = None,
                 **options: Any) -> list[RooflineData]:
    """roofline_data for each target, simulating every cascade on it."""
    out = []
    for target in targets:
        target = as_target(target)
        out.append(roofline_data(target, simulate_each(cascades, problem, target, mapping), **options))
    return out


# --------------------------------------------------------------------------------------------
# Traffic against buffer capacity
# --------------------------------------------------------------------------------------------

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

    target = as_target(target)
    points = []
    notes = []
    compulsory = math.nan
    for cascade in cascades:
        cascade = as_cascade(cascade)
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
                        compulsory_bytes=compulsory, points=tuple(points), steps=steps, notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# Speedup and energy across designs
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Design:
    """A design of the comparison: a target running a cascade (the FuseMax paper's baselines)."""

    label: str
    target: str
    cascade: str


PAPER_DESIGNS = (
    Design("Unfused", "unfused-cloud", "attention-3pass"),
    Design("FLAT", "flat-cloud", "attention-3pass"),
    Design("FuseMax", "fusemax-cloud", "fusemax"),
)


@dataclass(frozen=True)
class SpeedupRow:
    model: str
    seq_len: int
    design: str
    target: str
    cascade: str
    latency_s: float
    energy_j: float
    speedup: float  # baseline latency / latency
    energy_ratio: float  # energy / baseline energy
    bound: str


@dataclass(frozen=True)
class SpeedupData:
    baseline: str
    designs: tuple[Design, ...]
    rows: tuple[SpeedupRow, ...]
    mode: str = "prefill"

    def groups(self) -> list[tuple[str, int]]:
        return list(dict.fromkeys((r.model, r.seq_len) for r in self.rows))

    def geomean(self, design: str, field_name: str = "speedup") -> float:
        values = [getattr(r, field_name) for r in self.rows if r.design == design]
        return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan

    def row(self, model: str, seq_len: int, design: str) -> SpeedupRow:
        for r in self.rows:
            if (r.model, r.seq_len, r.design) == (model, seq_len, design):
                return r
        raise KeyError((model, seq_len, design))


def parse_design(text: str) -> Design:
    """'LABEL=TARGET:CASCADE' (or 'TARGET:CASCADE', labelled by the target)."""
    label, _, rest = text.rpartition("=")
    target, sep, cascade = rest.partition(":")
    if not sep or not target or not cascade:
        raise ConfigError(f"--design expects LABEL=TARGET:CASCADE (e.g. FuseMax=fusemax-cloud:fusemax), got {brief(text)}")
    return Design(label or target, target, cascade)


def speedup_data(models: Sequence[str], seq_lens: Sequence[int], designs: Sequence[Design] = PAPER_DESIGNS,
                 baseline: str | None = None, mode: str = "prefill", batch: int | None = None) -> SpeedupData:
    """Latency and energy of every design for each model and sequence length, relative to the
    baseline design (default: the first)."""
    from einsim.simulator.models import load_model
    from einsim.simulator.simulate import simulate

    if not designs:
        raise ConfigError("speedup needs at least one design")
    baseline = baseline or designs[0].label
    labels = [d.label for d in designs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:  # estimates are keyed by label: a repeat reported one design's latency as another's
        raise ConfigError(f"--design labels must differ; {', '.join(map(repr, repeated))} is given more than once "
                          f"(name them LABEL=TARGET:CASCADE)")
    if baseline not in labels:
        raise ConfigError(f"baseline {baseline!r} is not one of the designs ({', '.join(labels)})")
    targets = {d.target: as_target(d.target) for d in designs}
    cascades = {d.cascade: as_cascade(d.cascade) for d in designs}
    rows = []
    for model_name in models:
        model = load_model(model_name)
        for seq_len in seq_lens:
            problem = model.problem(int(seq_len), mode, batch)
            estimates = {d.label: simulate(cascades[d.cascade], problem, targets[d.target]) for d in designs}
            base = estimates[baseline]
            for d in designs:
                e = estimates[d.label]
                rows.append(SpeedupRow(
                    model=model.name, seq_len=int(seq_len), design=d.label, target=d.target, cascade=d.cascade,
                    latency_s=e.latency_s, energy_j=e.energy_j, speedup=base.latency_s / e.latency_s,
                    energy_ratio=e.energy_j / base.energy_j if base.energy_j else math.nan, bound=e.bound))
    return SpeedupData(baseline=baseline, designs=tuple(designs), rows=tuple(rows), mode=mode)


# --------------------------------------------------------------------------------------------
# The cascade's graph, coloured by pass
# --------------------------------------------------------------------------------------------

# Colour-blind-safe qualitative palette (Okabe & Ito); pass k takes PASS_COLORS[k-1].
PASS_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
INPUT_COLOR = "#BBBBBB"


def pass_color(pass_index: int) -> str:
    """The colour of pass `pass_index` (1-based); inputs (0) are grey."""
    if pass_index <= 0:
        return INPUT_COLOR
    return PASS_COLORS[(pass_index - 1) % len(PASS_COLORS)]


@dataclass(frozen=True)
class GraphNode:
    name: str
    kind: str  # "input" | "einsum"
    pass_index: int  # 0 for inputs (and for Einsums when no rank was analysed)
    color: str
    x: float
    y: float
    text: str  # the Einsum as written (inputs: their ranks)
    iterative: bool = False  # a running state written at [m1+1]


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    carried: bool = False  # a read of the previous state of a running tensor (RM[m1] by RM[m1+1])


@dataclass(frozen=True)
class PassGraph:
    cascade: str
    rank: str  # "" when no rank was analysed
    passes: int  # 0 when no rank was analysed
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]

    def node(self, name: str) -> GraphNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def rows(self) -> list[dict[str, Any]]:
        return ([{"record": "node", "cascade": self.cascade, **n.__dict__} for n in self.nodes]
                + [{"record": "edge", "cascade": self.cascade, **e.__dict__} for e in self.edges])


def pass_graph(cascade: Any, rank: str | None = None) -> PassGraph:
    """Inputs and Einsums as nodes, an edge per tensor read, each Einsum coloured by its pass over
    `rank` (analyze_passes; default M when the cascade has it, else no pass numbering: passes = 0);
    laid out left to right in topological generations."""
    import networkx as nx

    from einsim.einsum_cascades.passes import analyze_passes, dependency_graph

    cascade = as_cascade(cascade)
    if rank is None and "M" in cascade.ranks:
        rank = "M"
    report = analyze_passes(cascade, rank=rank) if rank is not None else None
    graph = dependency_graph(cascade)
    edges = [GraphEdge(a, b, bool(d.get("carried"))) for a, b, d in graph.edges(data=True)]
    for einsum in cascade.einsums:
        for tensor in einsum.operand_tensors:
            if tensor in cascade.inputs:
                edges.append(GraphEdge(tensor, einsum.output))
    ordering = nx.DiGraph()
    ordering.add_nodes_from(cascade.inputs)
    ordering.add_nodes_from(e.output for e in cascade.einsums)
    ordering.add_edges_from((e.source, e.target) for e in edges if not e.carried and e.source != e.target)
    for layer, names in enumerate(nx.topological_generations(ordering)):
        for name in names:
            ordering.nodes[name]["layer"] = layer
    for name in cascade.inputs:  # just before its first reader: short edges, fewer crossings
        readers = [ordering.nodes[b]["layer"] for b in ordering.successors(name)]
        ordering.nodes[name]["layer"] = max(0, min(readers) - 1) if readers else 0
    # Columns by layer, rows in declaration order (networkx's multipartite_layout orders a layer
    # through a set, which would move nodes between runs of the same command).
    layers: dict[int, list[str]] = {}
    for name in list(cascade.inputs) + [e.output for e in cascade.einsums]:
        layers.setdefault(ordering.nodes[name]["layer"], []).append(name)
    positions = {name: (float(layer), (len(names) - 1) / 2 - i)
                 for layer, names in layers.items() for i, name in enumerate(names)}
    iterative = cascade.iterative_tensors
    nodes = []
    for name in cascade.inputs:
        x, y = positions[name]
        text = f"{name}[{','.join(r.lower() for r in cascade.inputs[name])}]"
        nodes.append(GraphNode(name, "input", 0, INPUT_COLOR, float(x), float(y), text))
    for einsum in cascade.einsums:
        k = report.einsum_pass[einsum.output] if report else 0
        x, y = positions[einsum.output]
        nodes.append(GraphNode(einsum.output, "einsum", k, pass_color(max(k, 1)), float(x), float(y), einsum.text,
                               einsum.output in iterative))
    return PassGraph(cascade=cascade.name, rank=rank or "", passes=report.passes if report else 0,
                     nodes=tuple(nodes), edges=tuple(edges))
