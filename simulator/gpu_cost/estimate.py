"""The simulator's Estimate of a cascade on a GPU target, read off the one cost model: latency,
bound and utilisation from `kernel_cost`, traffic per memory level, compute per Einsum and unit,
energy, the on-chip buffer (docs/simulator.md § GPU cost model, "The Estimate")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from einsim.problem import Problem
from einsim.simulator.estimate import EinsumEstimate, Estimate
from einsim.simulator.gpu_cost.cascade_plan import is_attention
from einsim.simulator.gpu_cost.mapping import GpuMapping, gpu_mapping
from einsim.simulator.gpu_cost.model import KernelCost, kernel_cost
from einsim.simulator.gpu_cost.roofs import gpu_levels
from einsim.simulator.gpu_cost.linear import is_chunked_linear
from einsim.simulator.gpu_cost.search import has_tiles, search_mapping
from einsim.simulator.gpu_cost.unfused import simulate_unfused
from einsim.simulator.gpu_cost.work import einsum_unit, unit_split


def simulate_gpu(cascade: Any, problem: Problem, target: Any, mapping: Any = None) -> Estimate:
    """The Estimate of `cascade` for `problem` on a GPU target: a softmax-attention cascade as one
    fused kernel (its passes as launches), a chunked linear-attention cascade as einsim's chunked
    kernels (linear.py); any other cascade unfused, one kernel per Einsum."""
    if is_chunked_linear(cascade):
        return _linear_estimate(cascade, problem, target, kernel_cost(cascade, problem, target, mapping))
    plan = gpu_mapping(mapping).for_target(target.architecture)
    if not is_attention(cascade):  # (before any pass analysis over M: an FFN has no M)
        return simulate_unfused(cascade, problem, target, plan)
    cost = kernel_cost(cascade, problem, target, plan)
    searched = None
    if plan.search or (not cost.fits and not has_tiles(plan)):
        searched = search_mapping(cascade, problem, target, plan)
        plan, cost = searched.mapping, searched.cost
    estimate = _attention_estimate(cascade, problem, target, plan, cost)
    if searched is None:
        return estimate
    tiles = f"{plan.block_m}x{plan.block_n} tiles, {plan.num_warps} warps, {plan.num_stages} stages"
    note = (f"mapping search: {searched.fitting} of {searched.candidates} mappings fit; the fastest, {tiles}, is shown"
            if searched.fitting else f"mapping search: none of {searched.candidates} mappings fits this target")
    return replace(estimate, notes=(note,) + estimate.notes)


def _attention_estimate(cascade: Any, problem: Problem, target: Any, plan: GpuMapping, cost: KernelCost) -> Estimate:
    launches = cost.plan
    layout, traffic = launches.layout, launches.traffic
    tiles = layout.tiles
    roofs = cost.roofs
    counts = layout.counts
    copies = problem.batch * layout.heads_of_programs
    tiles_total = counts.visited_pairs * copies  # (query tile, key tile) pairs, all passes alike
    programs = counts.visited.size * copies * layout.splits
    per_einsum, units = _per_einsum_ops(launches.pass_work, tiles_total, programs)
    totals = {"mac": 0.0, "exp": 0.0, "vector": 0.0}
    for ops in per_einsum.values():
        macs, sfu, fma = unit_split(ops)
        totals["mac"] += macs
        totals["exp"] += sfu
        totals["vector"] += fma
        for kind, value in ops.items():
            if kind not in ("mac", "exp"):
                totals[kind] = totals.get(kind, 0.0) + value
    levels = gpu_levels(target)
    dtype = roofs.dtype
    e_tc = target.energy_per_op(target.unit("matrix"), dtype, "mac")
    e_vec = target.energy_per_op(target.unit("vector"), dtype)
    e_sfu = target.energy_per_op(target.unit("exp"), dtype, "exp")
    hbm, l2, smem = levels["hbm"], levels["l2"], levels["shared_memory"]
    energy = {
        "tensor_core": totals["mac"] * e_tc, "cuda_core": totals["vector"] * e_vec, "sfu": totals["exp"] * e_sfu,
        "hbm": traffic.hbm_read * hbm.read_energy_j_per_byte + traffic.hbm_write * hbm.write_energy_j_per_byte,
        "l2": traffic.l2_bytes * l2.read_energy_j_per_byte,
        "shared_memory": traffic.smem_bytes * 0.5 * (smem.read_energy_j_per_byte + smem.write_energy_j_per_byte),
    }
    rates = {"tensor_core": roofs.matmul_macs_per_s, "sfu": roofs.exp_per_s, "cuda_core": roofs.vector_ops_per_s}
    rows = []
    for einsum in cascade.einsums:
        ops = per_einsum.get(einsum.output, {})
        macs, sfu, fma = unit_split(ops)
        busy = macs / rates["tensor_core"] + sfu / rates["sfu"] + fma / rates["cuda_core"]
        moved = traffic.attributed.get(einsum.output, 0.0)
        rows.append(EinsumEstimate(
            einsum=einsum.output, pass_index=_pass_of(launches, einsum),
            unit=units.get(einsum.output, "cuda_core"), compute_ops=ops, traffic_bytes=moved,
            buffer_bytes=_einsum_buffer(einsum, layout.rows_per_program, tiles.block_n, problem) * roofs.sm_count
            * cost.programs_per_sm,
            latency_s=max(busy, moved / roofs.hbm_bytes_per_s),
            energy_j=macs * e_tc + sfu * e_sfu + fma * e_vec + moved * hbm.read_energy_j_per_byte))
    notes = list(cost.notes) + _notes(problem, layout, launches, cost, roofs)
    if not cost.fits:
        notes.insert(0, "does not fit: " + "; ".join(cost.reasons) + " (the kernel cannot launch: no latency)")
    chosen = {
        "kind": "gpu", "kernel_style": plan.kernel_style, "block_m": tiles.block_m, "block_n": tiles.block_n,
        "num_warps": tiles.num_warps, "num_stages": tiles.num_stages, "ctas_per_sm": cost.programs_per_sm,
        "kv_splits": layout.splits, "softmax_overlap": launches.overlap, "multipass": plan.multipass,
        "roofs": plan.roofs, "ctas": programs, "rows_per_cta": layout.rows_per_program, "gqa_packed": layout.packed,
        "intermediate_bytes": plan.intermediate_bytes,
        "launches": [{"name": t.name, "time_s": t.time_s, "bound": t.bound, "programs": t.programs} for t in cost.launches],
        # off-chip bytes of each pass by tensor (split-KV partials excluded), for the kernels' pass_traffic
        "hbm_bytes_per_pass": [{"reads": dict(traffic.reads[k]), "writes": dict(traffic.writes[k])}
                               for k in sorted(traffic.reads)],
    }
    return Estimate(
        cascade=cascade.name, target=target.name, problem=problem, passes=len(traffic.reads),
        buffer_bytes=float(cost.smem_bytes * max(1, cost.programs_per_sm)), buffer_capacity_bytes=float(roofs.smem_bytes_per_sm),
        fits=cost.fits, traffic_bytes=traffic.hbm_bytes,
        traffic_by_level={"hbm": traffic.hbm_bytes, "l2": traffic.l2_bytes, "shared_memory": traffic.smem_bytes},
        compute_ops=totals, latency_s=cost.time_s, bound=cost.bound, utilization=cost.utilization,
        energy_j=float(sum(energy.values())), energy_by_component=energy, per_einsum=tuple(rows), notes=tuple(notes),
        mapping=chosen)


def _linear_estimate(cascade: Any, problem: Problem, target: Any, cost: KernelCost) -> Estimate:
    """The Estimate of a chunked linear-attention kernel (linear.py): every Einsum's per-chunk work
    times the chunks of every head; the launches' HBM bytes; energy as for attention."""
    walk = next((launch for launch in cost.plan.launches if launch.name == "forward walk"), None)
    group = walk.groups[0] if walk is not None else None
    # chunk steps of all programs (each on its program's BLOCK_C state columns, as pass_work counts them)
    chunks = float(group.full.sum() + group.partial.sum()) * group.repeats if group is not None else 0.0
    per_einsum: dict[str, dict[str, float]] = {}
    for work in cost.plan.pass_work.values():
        for scope in (work.tile, work.program):
            for name, ops in scope.by_einsum.items():
                row = per_einsum.setdefault(name, {})
                for kind, value in ops.items():
                    row[kind] = row.get(kind, 0.0) + value * chunks
    dtype = cost.roofs.dtype
    e_tc = target.energy_per_op(target.unit("matrix"), dtype, "mac")
    e_vec = target.energy_per_op(target.unit("vector"), dtype)
    e_sfu = target.energy_per_op(target.unit("exp"), dtype, "exp")
    hbm = gpu_levels(target)["hbm"]
    totals = {"mac": 0.0, "exp": 0.0, "vector": 0.0}
    rows = []
    for einsum in cascade.einsums:
        ops = per_einsum.get(einsum.output, {})
        macs, sfu, fma = unit_split(ops)
        totals["mac"] += macs
        totals["exp"] += sfu
        totals["vector"] += fma
        busy = macs / cost.roofs.matmul_macs_per_s + sfu / cost.roofs.exp_per_s + fma / cost.roofs.vector_ops_per_s
        rows.append(EinsumEstimate(einsum.output, 1, einsum_unit(ops) if ops else "cuda_core", ops, 0.0, 0.0, busy,
                                   macs * e_tc + sfu * e_sfu + fma * e_vec))
    energy = {"tensor_core": totals["mac"] * e_tc, "cuda_core": totals["vector"] * e_vec, "sfu": totals["exp"] * e_sfu,
              "hbm": cost.hbm_bytes * hbm.read_energy_j_per_byte}
    return Estimate(
        cascade=cascade.name, target=target.name, problem=problem, passes=1,
        buffer_bytes=float(cost.smem_bytes * max(1, cost.programs_per_sm)),
        buffer_capacity_bytes=float(cost.roofs.smem_bytes_per_sm), fits=cost.fits, traffic_bytes=cost.hbm_bytes,
        traffic_by_level={"hbm": cost.hbm_bytes}, compute_ops=totals, latency_s=cost.time_s, bound=cost.bound,
        utilization=cost.utilization, energy_j=float(sum(energy.values())), energy_by_component=energy,
        per_einsum=tuple(rows), notes=cost.notes + cost.plan.notes,
        mapping={"kind": "gpu-chunked-linear", "kernel_style": cost.kernel_style,
                 "launches": [{"name": t.name, "time_s": t.time_s, "bound": t.bound} for t in cost.launches]})


def _per_einsum_ops(works: dict, tiles_total: float, programs: float) -> tuple[dict, dict]:
    """Operations of each Einsum over the whole kernel (per-tile work times the tiles visited,
    per-program work times the programs), and the unit each runs on."""
    per_einsum: dict[str, dict[str, float]] = {}
    units: dict[str, str] = {}
    for work in works.values():
        for scope, factor in ((work.tile, tiles_total), (work.program, programs)):
            for name, ops in scope.by_einsum.items():
                row = per_einsum.setdefault(name, {})
                for kind, value in ops.items():
                    row[kind] = row.get(kind, 0.0) + value * factor
                units[name] = einsum_unit(ops)
    return per_einsum, units


def _pass_of(launches: Any, einsum: Any) -> int:
    for k, work in sorted(launches.pass_work.items()):
        if einsum.output in work.tile.by_einsum or einsum.output in work.program.by_einsum:
            return k
    return 1


def _einsum_buffer(einsum: Any, rows: int, block_n: int, problem: Problem) -> float:
    """On-chip bytes one program holds for an Einsum's output tile (fp32 accumulators)."""
    ranks = set(einsum.output_ranks)
    extent = rows
    if ranks & {"M0", "M"}:
        extent *= block_n
    if "F" in ranks:
        extent *= problem.v_head_dim
    elif "E" in ranks:
        extent *= problem.head_dim
    return float(extent * 4)


def _notes(problem: Problem, layout: Any, launches: Any, cost: KernelCost, roofs: Any) -> list[str]:
    notes = []
    if layout.counts.exact_pairs == 0:
        notes.append("the mask leaves no (query, key) pair: only the launches are paid")
    passes = len(launches.traffic.reads)
    if passes > 1:
        notes.append(f"{passes}-pass cascade: each pass is its own launch; what crosses passes goes through HBM")
    if layout.splits > 1:
        notes.append(f"split-KV over {layout.splits} programs per query tile; partial outputs combine through HBM "
                     f"({launches.traffic.split_bytes / 1e6:.3g} MB)")
    programs = int(np.sum([t.programs for t in cost.launches])) or int(
        layout.counts.visited.size * problem.batch * layout.heads_of_programs * layout.splits)
    first = cost.launches[0].programs if cost.launches and cost.launches[0].programs else programs
    if first < roofs.sm_count:
        notes.append(f"only {first} programs for {roofs.sm_count} SMs: {100 * first / roofs.sm_count:.0f}% of the GPU is busy")
    notes.append(
        f"roofs: matmul {roofs.matmul_flops / 1e12:.0f} TFLOP/s ({roofs.matmul_source}) x MMA efficiency "
        f"{launches.kernel_style.fit.mma_efficiency:g}, SFU {roofs.exp_per_s / 1e12:.2f} Top/s, FP32 "
        f"{roofs.vector_ops_per_s / 1e12:.1f} Top/s, HBM {roofs.hbm_bytes_per_s / 1e12:.2f} TB/s ({roofs.hbm_source}); "
        f"kernel style {launches.kernel_style.name}: softmax/matmul overlap {launches.overlap:g}")
    notes.append(f"{programs} programs of {layout.rows_per_program} query rows x {layout.tiles.block_n}-key tiles, "
                 f"{cost.programs_per_sm} per SM on {roofs.sm_count} SMs; bound by {cost.bound}")
    return notes
