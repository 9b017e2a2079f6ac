"""Cascades without softmax-attention structure (GEMM, FFN, linear attention) on a GPU: one kernel
per Einsum, each reading its operands from HBM and writing its output there: a matmul as the
layer model's cuBLAS GEMM (gemm.py), any other Einsum as the slower of its compute and its bytes
plus a launch (docs/simulator.md § GPU cost model, "Other cascades")."""

from __future__ import annotations

import math
from typing import Any

from einsim.einsum_cascades.passes import analyze_passes
from einsim.problem import Problem
from einsim.simulator.estimate import EinsumEstimate, Estimate
from einsim.simulator.gpu_cost.cascade_plan import is_matmul
from einsim.simulator.gpu_cost.gemm import gemm_cost
from einsim.simulator.gpu_cost.mapping import GpuMapping
from einsim.simulator.gpu_cost.model import bound_by
from einsim.simulator.gpu_cost.roofs import gpu_levels, gpu_roofs
from einsim.simulator.gpu_cost.styles import fitted
from einsim.simulator.gpu_cost.work import einsum_ops, unit_split


def gemm_shape(cascade: Any, einsum: Any, sizes: dict[str, int]) -> tuple[int, int, int, int]:
    """(batch, M, N, K) of a matmul Einsum: output ranks both operands carry are batch, those of
    the first operand only M, of the second only N; the summed ranks K."""
    first, second = (set(cascade.tensors[t]) for t in einsum.operand_tensors)

    def size(ranks: list[str] | tuple[str, ...]) -> int:
        return math.prod(sizes[r] for r in ranks)
    out = einsum.output_ranks
    return (size([r for r in out if r in first and r in second]), size([r for r in out if r in first and r not in second]),
            size([r for r in out if r in second and r not in first]), size(einsum.reduced_ranks))


def simulate_unfused(cascade: Any, problem: Problem, target: Any, plan: GpuMapping) -> Estimate:
    """One launch per Einsum at the roofs of the problem's dtype."""
    roofs = gpu_roofs(target, problem.dtype, plan.roofs)
    # every size the problem has, its symbols too (a model's hidden and FFN sizes bind an FFN's D and S):
    # the sizes the report's headline shows (simulate.cascade_facts binds the same)
    sizes = cascade.bind(problem.rank_sizes())
    passes = analyze_passes(cascade, rank="M").passes if "M" in cascade.ranks else 1
    word = problem.dtype_bytes
    efficiency = plan.matmul_efficiency if plan.matmul_efficiency is not None else 1.0
    e_tc = target.energy_per_op(target.unit("matrix"), roofs.dtype, "mac")
    e_vec = target.energy_per_op(target.unit("vector"), roofs.dtype)
    e_sfu = target.energy_per_op(target.unit("exp"), roofs.dtype, "exp")
    hbm = gpu_levels(target)["hbm"]
    rows, latency, hbm_total = [], 0.0, 0.0
    totals = {"mac": 0.0, "exp": 0.0, "vector": 0.0}
    busy = {"tensor_core": 0.0, "sfu": 0.0, "cuda_core": 0.0, "hbm": 0.0}
    intermediates = {t for t in cascade.tensors if t not in cascade.inputs}
    for einsum in cascade.einsums:
        points = float(einsum.iteration_points(sizes))
        unit, ops = einsum_ops(einsum, points, sizes, intermediates if not is_matmul(einsum) else set())
        macs, sfu, fma = unit_split(ops)
        traffic = sum(float(cascade.tensor_elements(t, sizes)) for t in einsum.operand_tensors) * word
        traffic += float(cascade.tensor_elements(einsum.output, sizes)) * word
        t_tc = macs / (roofs.matmul_macs_per_s * efficiency)
        t_soft = sfu / roofs.exp_per_s + fma / roofs.vector_ops_per_s
        t_mem = traffic / roofs.hbm_bytes_per_s
        t = roofs.launch_overhead_s + max(t_tc + t_soft, t_mem)
        if is_matmul(einsum) and plan.matmul_efficiency is None:
            # a matmul is a cuBLAS GEMM: the layer model's tiles, waves and fitted efficiency (gemm.py)
            batch, m, n, k = gemm_shape(cascade, einsum, sizes)
            t = gemm_cost(m, n, k, word, roofs, fitted(), batch).time_s
        latency += t
        hbm_total += traffic
        for key, value in (("mac", macs), ("exp", sfu), ("vector", fma)):
            totals[key] += value
        busy["tensor_core"] += t_tc
        busy["sfu"] += sfu / roofs.exp_per_s
        busy["cuda_core"] += fma / roofs.vector_ops_per_s
        busy["hbm"] += t_mem
        rows.append(EinsumEstimate(einsum=einsum.output, pass_index=1, unit=unit, compute_ops=ops, traffic_bytes=traffic,
                                   buffer_bytes=0.0, latency_s=t,
                                   energy_j=macs * e_tc + sfu * e_sfu + fma * e_vec + traffic * hbm.read_energy_j_per_byte))
    energy = {"tensor_core": totals["mac"] * e_tc, "cuda_core": totals["vector"] * e_vec, "sfu": totals["exp"] * e_sfu,
              "hbm": hbm_total * hbm.read_energy_j_per_byte}
    utilization = {name: value / latency if latency else 0.0 for name, value in busy.items()}
    utilization["l2"] = 0.0
    return Estimate(
        cascade=cascade.name, target=target.name, problem=problem, passes=passes,
        buffer_bytes=0.0, buffer_capacity_bytes=float(roofs.smem_bytes_per_sm), fits=True,
        traffic_bytes=hbm_total, traffic_by_level={"hbm": hbm_total}, compute_ops=totals,
        latency_s=latency, bound=bound_by(busy, latency, len(cascade.einsums) * roofs.launch_overhead_s),
        utilization=utilization, energy_j=sum(energy.values()), energy_by_component=energy, per_einsum=tuple(rows),
        notes=(f"{cascade.name} is not softmax attention over M and P: mapped unfused, one kernel per Einsum, "
               f"every operand and result through HBM ({len(cascade.einsums)} launches)",),
        mapping={"kind": "gpu-unfused", "kernel_style": plan.kernel_style, "roofs": plan.roofs},
    )
