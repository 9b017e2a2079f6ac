"""The Estimate of a compiled spatial design at its chosen mapping (docs/simulator.md §7): totals,
per-Einsum rows, what bounds the latency, the buffer it needs and uses, and notes in words."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from einsim.simulator.estimate import EinsumEstimate, Estimate
from einsim.simulator.spatial import search
from einsim.units import format_bytes


def first(value) -> Any:
    """The first entry of a per-capacity array (or the scalar)."""
    return np.atleast_1d(value)[0]


def one(value) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def build_estimate(design, choices: list[dict[str, Any]]) -> Estimate:
    """The Estimate at per-group choices."""
    parts = search.evaluate_parts(design, choices)
    r = search.total(parts)
    feasible = bool(np.asarray(r["feasible"]).reshape(-1)[0])
    latency = one(r["latency_s"]) if feasible else float("nan")
    per_einsum = tuple(
        EinsumEstimate(
            einsum=node.name,
            pass_index=node.pass_index,
            unit=node.unit,
            compute_ops={k: v for k, v in node.ops.items() if v},
            traffic_bytes=one(r["einsum_dram"][node.name]),
            buffer_bytes=einsum_buffer_bytes(design, node, choices),
            latency_s=one(r["einsum_cycles"][node.name]) / design.clock,
            energy_j=one(r["einsum_energy"][node.name]),
        )
        for node in design.nodes
    )
    dram_name, buffer_name = design.dram.name, design.buffer_level.name
    times = {k: one(v) for k, v in r["times"].items()}
    utilization = {}
    if math.isfinite(latency) and latency > 0:
        utilization = {"pe_2d": one(r["work_s"]["pe_2d"]) / latency, "pe_1d": one(r["work_s"]["pe_1d"]) / latency,
                       dram_name: times["dram"] / latency, buffer_name: times["global_buffer"] / latency}
    bound = bound_by(design, parts)
    compute_ops: dict[str, float] = {}
    for node in design.nodes:
        for kind, count in node.ops.items():
            compute_ops[kind] = compute_ops.get(kind, 0.0) + count
    capacity = design.buffer_level.capacity_bytes
    plans = [first(c.get("plan", [None])) for c in choices]
    notes = [f"mapping: {describe(design, choices)}"]
    notes += [f"staging: {describe_plan(plan)}" for plan in dict.fromkeys(p for p in plans if p is not None)]
    if design.filtered is not None:
        notes.append(f"the mask and the cascade's filters leave {design.tile_density:.1%} of the "
                     f"{design.filtered.query_tile} x {design.filtered.key_tile} tiles to compute; a row keeps at most "
                     f"{design.live_fraction:.1%} of the keys live")
    if design.data_dependent_filters:
        notes.append(data_filter_note(design))
    spill = one(r["spill_fraction"])
    if spill > 0:
        share = f"{spill:.0%}" if spill >= 0.01 else f"{spill:.2%}"
        if any(p is not None for p in plans):
            notes.append(f"the buffer is overbooked ({format_bytes(one(r['buffer_bytes']))} wanted in {format_bytes(capacity)}): "
                         f"{share} of every access to a staged tensor goes to DRAM")
        else:
            live = sorted({t for g in design.groups for t, _, _, _ in g.live})
            spills = {str(first(c["spill"])) for c in choices}
            how = "written to DRAM and read back in each later pass" if spills == {"store"} else "recomputed (K re-read) in each later pass"
            notes.append(f"{share} of the rows live across passes ({', '.join(live)}) do not fit in {format_bytes(capacity)}: {how}")
    if not feasible:
        notes.append(f"even one query row's resident state does not fit in {format_bytes(capacity)}")
    if design.mapping.schedule == "sequential" and utilization:
        notes.append(f"sequential schedule: the 2D array does useful work {utilization['pe_2d']:.0%} of the time, "
                     f"the 1D array {utilization['pe_1d']:.0%}")
    notes.append(f"bound by {bound}")
    return Estimate(
        cascade=design.cascade.name,
        target=design.target.name,
        problem=design.problem,
        passes=design.report.passes,
        buffer_bytes=one(r["buffer_bytes"]),
        buffer_capacity_bytes=capacity,
        fits=bool(np.asarray(r["fits"]).reshape(-1)[0]),
        traffic_bytes=one(r["traffic_bytes"]),
        traffic_by_level={dram_name: one(r["traffic_bytes"]), buffer_name: one(r["buffer_traffic_bytes"])},
        compute_ops=compute_ops,
        latency_s=latency,
        bound=bound,
        utilization=utilization,
        energy_j=one(r["energy_j"]),
        energy_by_component={k: one(v) for k, v in r["energy_by_component"].items()},
        per_einsum=per_einsum,
        notes=tuple(notes),
        mapping=design.mapping.describe([int(first(c["query_block"])) for c in choices],
                                        [str(first(c["spill"])) for c in choices], plans),
        buffer_needed_bytes=design.needed_buffer_bytes(plans),
    )


def bound_by(design, parts) -> str:
    """§4.4 the component that sets the latency of the groups that take the most time (each
    group's evaluation at its choice)."""
    totals: dict[str, float] = {}
    for r in parts:
        times = {k: one(v) for k, v in r["times"].items()}
        latency = one(r["latency_s"])
        name = max(("dram", "global_buffer", "schedule"), key=lambda k: times[k])
        if name == "schedule":
            name = max(("pe_2d", "pe_1d"), key=lambda k: times[k])
            if design.mapping.schedule == "sequential" and times[name] < 0.999 * times["schedule"]:
                name = "schedule (array drain and dependences)"
        name = {"dram": design.dram.name, "global_buffer": design.buffer_level.name}.get(name, name)
        totals[name] = totals.get(name, 0.0) + latency
    return max(totals, key=totals.get)


def einsum_buffer_bytes(design, node, choices) -> float:
    """On-chip bytes an Einsum keeps live: its per-query output state or live rows for a query
    block, else one tile."""
    block = float(first(choices[node.group]["query_block"]))
    info = design.tensors[node.name]
    if info.role == "query" or any(t == node.name for t, _, _, _ in design.groups[node.group].live):
        return design.word * info.per_query * block
    return design.word * min(design.mapping.query_tile, block) * (node.row_extent if node.unit == "pe_2d" else 1)


def describe(design, choices) -> str:
    mapping = design.mapping
    parts = [mapping.dataflow]
    if mapping.key_tile is not None:
        parts.append(f"key tile {mapping.key_tile}")
    parts.append(f"query tile {mapping.query_tile}")
    blocks = [int(first(c["query_block"])) for c in choices]
    parts.append("query block " + "/".join(str(b) for b in blocks))
    parts.append(mapping.schedule)
    if mapping.buffering == 1:
        parts.append("single-buffered tiles")
    if len(mapping.groups) > 1:
        parts.append(f"{len(mapping.groups)} kernels")
    return ", ".join(parts)


def describe_plan(plan) -> str:
    """`QK, SN, A in the buffer; Q, K, V, AV streamed; QK, AV output-stationary`."""
    staged = [t for t, where in plan.staging.items() if where == "buffer"]
    streamed = [t for t, where in plan.staging.items() if where == "stream"]
    kinds: dict[str, list[str]] = {}
    for einsum, kind in plan.stationarity.items():
        kinds.setdefault(kind, []).append(einsum)
    parts = [f"{', '.join(staged) or 'nothing'} in the buffer", f"{', '.join(streamed) or 'nothing'} streamed"]
    parts += [f"{', '.join(names)} {kind}-stationary" for kind, names in kinds.items()]
    return "; ".join(parts)


def data_filter_note(design) -> str:
    """What the report says of filters that read input values (document ids, a block mask)."""
    read = ", ".join(design.data_dependent_filters)
    if design.problem.filter_inputs is not None:
        return f"the filters read {read}: tiles classified from {design.problem.filter_inputs.describe()}"
    return (f"the filters read {read}: which tiles those terms keep depends on their values, so they are counted "
            "as keeping every tile")
