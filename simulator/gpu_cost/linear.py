"""Chunked linear attention on a GPU, as Lightning Attention and flash-linear-attention run it:
programs walk chunks of C tokens of one head, each chunk doing its masked quadratic term (C x C
scores) and its exchange with the running E x F state, reading Q, K, V once and writing O once;
long sequences are cut into segments whose states are combined by a scan, so the grid fills the
GPU (docs/simulator.md § GPU cost model, "Linear attention").

The work per chunk is read off the cascade (any chunked cascade with a running state: every
Einsum counted at one chunk, M0 = P0 = C), so a feature map or a decay is priced as written.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from einsim.simulator.gpu_cost.attention import KernelLaunches, _padded_problem, _resources
from einsim.simulator.gpu_cost.cascade_plan import family, pass_plan
from einsim.simulator.gpu_cost.engine import Launch, ProgramGroup, TileWork
from einsim.simulator.gpu_cost.mapping import GpuMapping
from einsim.simulator.gpu_cost.roofs import GpuRoofs
from einsim.simulator.gpu_cost.styles import FittedModel, Tiles, style
from einsim.simulator.gpu_cost.work import pass_work

STATE_BYTES = 4  # segment states are fp32 E x F
CHUNK = 64  # the default chunk (fla's and einsim's linear kernels use 64)


def is_chunked_linear(cascade: Any) -> bool:
    """A chunked cascade with a running state: M and P both cut into chunks (M1, M0) and (P1, P0),
    and a tensor carried from chunk to chunk along M1 that has no query rank (linear attention's
    E x F state)."""
    parts = getattr(cascade, "partitions", {})
    if "M" not in parts or "P" not in parts:
        return False
    family_p = family(cascade, "P")
    carried = [cascade.tensors[name] for name, rank in cascade.iterative_tensors.items() if rank in parts["M"]]
    return any(not set(ranks) & family_p for ranks in carried)


def linear_launches(cascade: Any, problem: Any, mapping: GpuMapping, roofs: GpuRoofs,
                    model: FittedModel) -> KernelLaunches:
    """One walk launch over (batch, head, segment) programs, plus a state scan when segmented."""
    kernel = style(mapping.kernel_style, model)
    chunk = mapping.block_n or CHUNK
    tiles = Tiles(0, chunk, chunk, mapping.num_warps or 4, mapping.num_stages or 2)
    plan = pass_plan(cascade, "recompute")
    works = pass_work(plan, _padded_problem(problem, kernel), chunk, chunk)
    per_chunk = {"macs": 0.0, "sfu": 0.0, "fma": 0.0, "bytes": 0.0}
    for work in works.values():
        for scope in (work.tile, work.program):
            per_chunk["macs"] += scope.macs
            per_chunk["sfu"] += scope.sfu
            per_chunk["fma"] += scope.fma
            per_chunk["bytes"] += scope.input_bytes
    scores = float(chunk * chunk)
    step = TileWork(per_chunk["macs"], kernel.fit.mma_efficiency, per_chunk["sfu"],
                    per_chunk["fma"] + kernel.fit.extra_fma_per_score * scores, per_chunk["bytes"])
    masked = TileWork(step.macs, step.mma_efficiency, step.sfu_ops, step.fma_ops + kernel.fit.mask_fma_per_score * scores,
                      step.load_bytes)
    fit = _resources(kernel, tiles, problem, mapping, roofs, model)
    heads = problem.batch * problem.q_heads
    chunks = math.ceil(problem.q_len / chunk)
    slots = roofs.sm_count * max(1, fit.programs_per_sm)
    segments = mapping.kv_splits or max(1, min(chunks, math.ceil(slots / heads)))
    per_program = math.ceil(chunks / segments)
    s, E, F = problem.dtype_bytes, problem.head_dim, problem.v_head_dim
    # every chunk is the causal diagonal of its own quadratic term: a masked tile
    group = ProgramGroup(np.array([0.0]), np.array([float(per_program)]), heads * segments, step, masked,
                         TileWork(load_bytes=float(E * F * STATE_BYTES)), "chunks")
    hbm = float(problem.batch * (problem.q_heads * problem.q_len * (E + F) + problem.kv_heads * problem.kv_len * (E + F))) * s
    launches = [Launch("chunked linear attention", (group,), hbm, fit.programs_per_sm, max(1, tiles.num_warps // 4),
                       tiles.num_stages, fit.spilled_fraction)]
    if segments > 1:  # segment states written, scanned, read back
        launches.append(Launch("segment state scan", (), 3.0 * heads * segments * E * F * STATE_BYTES, memory_only=True))
    overlap = kernel.fit.softmax_overlap if mapping.softmax_overlap is None else mapping.softmax_overlap
    return KernelLaunches(tuple(launches), fit, kernel, overlap, pass_work=works,
                          notes=(f"chunked linear attention: {chunks} chunks of {chunk} tokens per head in {segments} "
                                 f"segment(s) of {per_program} chunks",))
