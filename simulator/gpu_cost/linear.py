"""Chunked linear attention on a GPU, as einsim's kernels (kernels/linear), Lightning Attention
and flash-linear-attention run it: programs walk chunks of C tokens of one head, each chunk doing
its masked quadratic term (C x C scores) and its exchange with the running E x F state, reading Q,
K, V and writing O once; long sequences are cut into segments, whose states a parallel summing
launch and a short scan provide, so the grid fills the GPU (docs/simulator.md § GPU cost model,
"Linear attention").

The work per chunk is read off the cascade (any chunked cascade with a running state: every
Einsum counted at one chunk, M0 = P0 = C, at the program's BLOCK_C state columns), so a feature
map or a decay is priced as written. The launches are the kernels': a walk program owns one
(batch, query head, BLOCK_C state columns, segment); SEGMENT tokens per segment (0: one walk) adds
the segment sums and scan. The backward is three walks of the same chunk work with the roles'
head dims (dQ forward in time; dV, dK backward in time with the state's gradient), the sums and
scan of that gradient, the dQ walk's segment starts reused from the forward (`store_states`) or
recomputed, and a group reduction of dK, dV under GQA. A decode step (one token against the state,
the recurrent form) is a memory-bound launch that reads and writes the fp32 state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from einsim.kernel_rules import (LINEAR_BACKWARD_STAGES, LINEAR_CHUNK, LINEAR_STAGES, LINEAR_STATE_BYTES,
                                 LINEAR_STATE_COLUMNS, LINEAR_WARPS, linear_default_segment, linear_walk_shared_memory,
                                 padded_head_dim)
from einsim.simulator.gpu_cost.attention import KernelLaunches, _padded_problem
from einsim.simulator.gpu_cost.cascade_plan import family, pass_plan
from einsim.simulator.gpu_cost.engine import Launch, ProgramGroup, TileWork
from einsim.simulator.gpu_cost.mapping import GpuMapping
from einsim.simulator.gpu_cost.resources import residency
from einsim.simulator.gpu_cost.roofs import GpuRoofs
from einsim.simulator.gpu_cost.styles import FittedModel, style
from einsim.simulator.gpu_cost.work import pass_work

COMPILED_MIN_REGISTERS = 180  # the fewest registers per thread of any compiled walk (see _walk_residency)
# Two constants particular to the walk, fitted to the kernels' measured times on the H200
# (benchmarks/fit_linear_walk.py on benchmarks/data/h200_linear_w4.csv; errors, held-out rows and
# what the fit misses: docs/linear-attention.md § Cost model):
# - WALK_MMA_EFFICIENCY: the fraction of the measured matmul roof a chunk's four small dependent
#   dots reach (64-row wgmma each followed by its wait, the state converted to a bf16 operand in
#   shared memory every chunk) — far below a long GEMM's or the fused softmax kernels';
# - WALK_STEP_LATENCY_S: with 2 stages the pipeliner issues a chunk's loads after the previous
#   chunk's dots and waits for them at the top of the next step (the compiled TTGIR), so each step
#   waits about one load round trip whatever the SM's throughput; programs sharing an SM overlap
#   those waits (engine.Launch.step_latency_s); 3 stages or more prefetch a chunk ahead (no wait).
WALK_MMA_EFFICIENCY = 0.203
WALK_STEP_LATENCY_S = 1.13e-6


@dataclass(frozen=True)
class LinearTiles:
    """One walk's launch shape."""

    chunk: int
    block_c: int
    segment: int  # tokens per segment; 0: one walk over the whole sequence
    num_warps: int
    num_stages: int


def linear_state(cascade: Any) -> str | None:
    """The running state of a linear-attention cascade: a tensor carried along the key rank (M or
    its chunk index M1) that no query rank indexes (KV [e, f] per head, whatever the query), or
    None. Softmax cascades carry per-query states (RM, RD, RNV index p): not recognised."""
    if "M" not in cascade.ranks or "P" not in cascade.ranks:
        return None
    family_m, family_p = family(cascade, "M"), family(cascade, "P")
    for name, rank in cascade.iterative_tensors.items():
        if rank in family_m and not set(cascade.tensors[name]) & family_p:
            return name
    return None


def is_chunked_linear(cascade: Any) -> bool:
    """A chunked cascade with a running state: M and P both cut into chunks (M1, M0) and (P1, P0),
    and a tensor carried from chunk to chunk along M1 that has no query rank (linear attention's
    E x F state)."""
    parts = cascade.partitions
    state = linear_state(cascade)
    return state is not None and "M" in parts and "P" in parts and cascade.iterative_tensors[state] in parts["M"]


def is_recurrent_linear(cascade: Any) -> bool:
    """The recurrent form: the state carried token by token along M itself (decode steps)."""
    state = linear_state(cascade)
    return state is not None and cascade.iterative_tensors[state] == "M"


def has_decay(cascade: Any) -> bool:
    """The state decays: its update scales the previous state (g KV[m1] + ..., exp(-SLOPE[h])
    KV[m] + ...) instead of only adding to it."""
    from einsim.einsum_cascades.expr import Access, Binary, walk

    state = linear_state(cascade)
    update = next(e for e in cascade.einsums if e.output == state)
    return any(isinstance(node, Binary) and node.op in ("*", "/")
               and any(isinstance(inner, Access) and inner.tensor == state for inner in walk(node))
               for node in walk(update.expression))


def linear_tiles(mapping: GpuMapping, problem: Any, columns: int, direction: str = "forward") -> LinearTiles:
    """The mapping's walk (block_n is the chunk, state_columns BLOCK_C, segment SEGMENT), the
    kernels' defaults (the forward's or the backward's) for what it leaves open."""
    chunk = mapping.block_n or LINEAR_CHUNK
    block_c = min(mapping.state_columns or LINEAR_STATE_COLUMNS, padded_head_dim(columns))
    segment = (mapping.segment if mapping.segment is not None
               else linear_default_segment(problem.batch, problem.q_heads, problem.q_len, chunk, block_c, columns))
    stages = LINEAR_STAGES if direction == "forward" else LINEAR_BACKWARD_STAGES
    return LinearTiles(chunk, block_c, segment, mapping.num_warps or LINEAR_WARPS, mapping.num_stages or stages)


@dataclass(frozen=True)
class Walk:
    """One walk: A, B [.., dim_ab] and C [.., dim_c] (out [.., dim_c]); A, B, C stored with
    a_heads, b_heads, c_heads heads (query or key/value heads); segment starts given by an
    earlier launch (no sums, no scan) or not."""

    name: str
    dim_ab: int
    dim_c: int
    a_heads: int
    b_heads: int
    c_heads: int
    starts_given: bool = False


def linear_launches(cascade: Any, problem: Any, mapping: GpuMapping, roofs: GpuRoofs, model: FittedModel,
                    direction: str = "forward") -> KernelLaunches:
    """The launches of the chunked kernels for `problem` (self-attention over q_len tokens)."""
    kernel = style(mapping.kernel_style, model)
    if problem.q_len == 1:
        return _decode_launches(problem, mapping, roofs, kernel)
    d, dv, hq, hkv = problem.head_dim, problem.v_head_dim, problem.q_heads, problem.kv_heads
    if direction == "forward":
        walks = [Walk("forward walk", d, dv, hq, hkv, hkv)]
    else:
        reuse = mapping.store_states if mapping.store_states is not None else True
        walks = [Walk("dQ walk", dv, d, hq, hkv, hkv, starts_given=reuse),
                 Walk("dV walk", d, dv, hkv, hq, hq),
                 Walk("dK walk", dv, d, hkv, hq, hq, starts_given=True)]
    plan = pass_plan(cascade, "recompute")
    launches: list[Launch] = []
    fits, works, notes = [], None, []
    for walk in walks:
        tiles = linear_tiles(mapping, problem, walk.dim_c, direction)
        # the chunk's work as the cascade states it, at the walk's head dims and its program's columns
        at = replace(problem, head_dim=walk.dim_ab, v_head_dim=tiles.block_c)
        walk_works = pass_work(plan, _padded_problem(at, kernel), tiles.chunk, tiles.chunk)
        works = works or walk_works
        fit = _walk_residency(tiles, problem, walk, mapping, roofs)
        fits.append(fit)
        if not fit.reasons:
            launches.extend(_walk_launches(walk, tiles, problem, fit.programs_per_sm, walk_works, kernel))
        if walk is walks[0]:
            segments = -(-problem.q_len // tiles.segment) if tiles.segment and tiles.segment < problem.q_len else 1
            notes.append(f"chunked linear attention: chunks of {tiles.chunk} tokens, {tiles.block_c} state columns "
                         f"per program, {segments} segment(s) per head")
    if direction == "backward" and problem.group_size > 1:
        partial = problem.batch * hq * problem.q_len * (d + dv) * LINEAR_STATE_BYTES
        reduced = problem.batch * hkv * problem.q_len * (d + dv) * problem.dtype_bytes
        launches.append(Launch("GQA group sum of dK, dV", (), float(partial + reduced), memory_only=True))
        notes.append("dK and dV are made per query head and summed over each key/value head's group")
    worst = next((fit for fit in fits if fit.reasons), min(fits, key=lambda fit: fit.programs_per_sm))
    overlap = kernel.fit.softmax_overlap if mapping.softmax_overlap is None else mapping.softmax_overlap
    return KernelLaunches(tuple(launches), worst, kernel, overlap, pass_work=works, notes=tuple(notes))


def _walk_residency(tiles: LinearTiles, problem: Any, walk: Walk, mapping: GpuMapping, roofs: GpuRoofs):
    """Shared memory as the kernels' resource model states it (the pipeliner's ring of the A, B, C
    chunk tiles and the staged state: kernels/linear/config.py, checked against the compiler);
    registers: the fp32 state, output and score tiles of a thread."""
    d = padded_head_dim(walk.dim_ab)
    smem = mapping.smem_bytes or linear_walk_shared_memory(tiles.chunk, tiles.block_c, tiles.num_stages,
                                                           walk.dim_ab, walk.dim_c, problem.dtype_bytes)
    threads = 32 * tiles.num_warps
    wanted = 40 + (d * tiles.block_c + tiles.chunk * tiles.block_c + tiles.chunk * tiles.chunk) / threads
    # Triton spends registers well beyond the tiles: every compiled walk used 180 to 255 per thread
    # (36 configs, 4 and 8 warps, benchmarks/measured/linear_walk_sm90_triton36.csv), so one
    # 8-warp program or two 4-warp programs fit an SM's 64k registers, whatever the tiles say
    wanted = max(wanted, COMPILED_MIN_REGISTERS)
    registers = mapping.registers or int(min(256, -(-wanted // 8) * 8))
    spilled = max(0.0, (wanted - 255) / wanted)
    return residency(int(smem), registers, spilled, threads, roofs)


def _walk_launches(walk: Walk, tiles: LinearTiles, problem: Any, per_sm: int, works: dict, kernel: Any) -> list[Launch]:
    s, n = problem.dtype_bytes, problem.q_len
    d, c, bc = padded_head_dim(walk.dim_ab), tiles.chunk, tiles.block_c
    columns = -(-walk.dim_c // bc)
    chunks = -(-n // c)
    if tiles.segment and tiles.segment < n:
        segment_chunks, segments = tiles.segment // c, -(-n // tiles.segment)
    else:
        segment_chunks, segments = chunks, 1
    heads = problem.batch * problem.q_heads
    # grid (column block, segment, head): one head's programs, the last segment maybe shorter
    per_head = np.array([min(segment_chunks, chunks - k * segment_chunks) for k in range(segments)] * columns,
                        dtype=float)
    zeros = np.zeros_like(per_head)
    state = float(d * bc)
    states_bytes = LINEAR_STATE_BYTES * heads * segments * walk.dim_ab * walk.dim_c
    efficiency = kernel.fit.mma_efficiency
    launches = []
    if segments > 1 and not walk.starts_given:
        sums = TileWork(macs=float(d * c * bc), mma_efficiency=efficiency, load_bytes=float(s * c * (d + bc)))
        read = s * problem.batch * n * (walk.b_heads * walk.dim_ab + walk.c_heads * walk.dim_c)
        launches.append(Launch(f"{walk.name}: segment sums", (ProgramGroup(per_head, zeros, heads, sums, sums,
                                                                           label="segment sums"),),
                               float(read + states_bytes), per_sm, num_stages=tiles.num_stages))
        steps = np.full(columns, float(segments))
        scan = TileWork(fma_ops=2 * state, load_bytes=LINEAR_STATE_BYTES * state)
        launches.append(Launch(f"{walk.name}: segment scan", (ProgramGroup(steps, np.zeros_like(steps), heads, scan,
                                                                           scan, label="segment scan"),),
                               float(2 * states_bytes), per_sm, num_stages=1, hbm_load_fraction=1.0))
    step = TileWork()
    for work in works.values():
        for scope in (work.tile, work.program):
            step = step.plus(TileWork(scope.macs, WALK_MMA_EFFICIENCY, scope.sfu, scope.fma, scope.input_bytes))
    scores = float(c * c)
    # every chunk is the causal diagonal of its own quadratic term: a masked tile
    masked = TileWork(step.macs, step.mma_efficiency, step.sfu_ops,
                      step.fma_ops + (kernel.fit.extra_fma_per_score + kernel.fit.mask_fma_per_score) * scores,
                      step.load_bytes)
    start = TileWork(load_bytes=LINEAR_STATE_BYTES * state)
    moved = s * problem.batch * n * ((walk.a_heads + walk.b_heads) * walk.dim_ab
                                     + (walk.c_heads + problem.q_heads) * walk.dim_c)
    launches.append(Launch(walk.name, (ProgramGroup(zeros, per_head, heads, masked, masked, program_work=start,
                                                    label="chunks"),),
                           float(moved + (states_bytes if segments > 1 else 0)), per_sm,
                           max(1, tiles.num_warps // 4), tiles.num_stages,
                           step_latency_s=WALK_STEP_LATENCY_S if tiles.num_stages <= 2 else 0.0))
    return launches


def _decode_launches(problem: Any, mapping: GpuMapping, roofs: GpuRoofs, kernel: Any) -> KernelLaunches:
    """One token against the state (kernels/linear/decode.py): each program reads and writes its
    [D, BLOCK_C] slice of the fp32 state once; a memory-bound launch."""
    d, dv = problem.head_dim, problem.v_head_dim
    state = LINEAR_STATE_BYTES * problem.batch * problem.q_heads * d * dv
    token = problem.dtype_bytes * problem.batch * (problem.q_heads + problem.kv_heads) * (d + dv)
    fit = residency(int(mapping.smem_bytes or 1024), 64, 0.0, 32 * (mapping.num_warps or 4), roofs)
    return KernelLaunches((Launch("decode step", (), float(2 * state + token), memory_only=True),), fit, kernel,
                          overlap=0.0, notes=("linear attention decode: bound by reading and writing the state",))


def linear_flops(problem: Any, tiles: LinearTiles, direction: str = "forward") -> float:
    """Matmul FLOPs the walks run (padded tail chunks counted whole), as the kernels count them."""
    tokens = -(-problem.q_len // tiles.chunk) * tiles.chunk
    d, dv = problem.head_dim, problem.v_head_dim

    def walk(a_dim: int, c_dim: int) -> float:
        return problem.batch * problem.q_heads * tokens * (2 * tiles.chunk * (a_dim + c_dim) + 4 * a_dim * c_dim)

    if direction == "forward":
        return float(walk(d, dv))
    return float(walk(dv, d) + walk(d, dv) + walk(dv, d))


__all__ = ["LinearTiles", "has_decay", "is_chunked_linear", "is_recurrent_linear",
           "linear_flops", "linear_launches", "linear_state", "linear_tiles"]
