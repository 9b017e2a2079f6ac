"""The launches of a fused attention kernel, built from (cascade, problem, mapping, style): the
forward (one launch per pass, plus a merge when K/V is split), and the backward (a preprocess,
dK/dV programs walking query tiles, dQ by its own programs or by atomics). The engine times
them (docs/simulator.md § GPU cost model, "Forward" and "Backward")."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from einsim.kernel_rules import attention_shared_memory, padded_head_dim
from einsim.simulator.gpu_cost.cascade_plan import PassPlan, bind, cascade_mask, is_matmul, pass_plan, tile_mask
from einsim.simulator.gpu_cost.data_mask import DataMask, build_launches, lane_ops_per_pair
from einsim.simulator.gpu_cost.engine import Launch, ProgramGroup, TileWork
from einsim.simulator.gpu_cost.mapping import GpuMapping
from einsim.simulator.gpu_cost.resources import Residency, residency
from einsim.simulator.gpu_cost.roofs import GpuRoofs
from einsim.simulator.gpu_cost.styles import FittedModel, KernelStyle, Tiles, style
from einsim.tiling import TileCounts
from einsim.simulator.gpu_cost.traffic import Traffic, attention_traffic, l2_reread_factor
from einsim.simulator.gpu_cost.work import PassWork, UnitOps, pass_work, unit_split

LSE_BYTES = 4  # fp32 log-sum-exp / delta per query row


@dataclass(frozen=True)
class ForwardLayout:
    """How the forward lays query rows onto programs."""

    tiles: Tiles
    rows_per_program: int  # valid query rows (a GQA group's heads packed for decode)
    q_per_tile: int  # query positions per program
    heads_of_programs: int  # programs per batch element and query tile: q heads, or kv heads when packed
    packed: bool
    splits: int
    counts: TileCounts


@dataclass(frozen=True)
class KernelLaunches:
    """The launches of one kernel, what they need on an SM, and the forward's traffic."""

    launches: tuple[Launch, ...]
    residency: Residency
    kernel_style: KernelStyle
    overlap: float
    layout: ForwardLayout | None = None
    traffic: Traffic | None = None
    pass_work: dict[int, PassWork] | None = None
    notes: tuple[str, ...] = ()


DECODE_ROWS = 64  # a call whose query rows of one K/V head fit this many is decode-like


def is_decode(problem: Any) -> bool:
    """Decode-like: the query rows that share a K/V head (q_len x group) fit one small tile."""
    return problem.q_len * problem.group_size <= DECODE_ROWS and problem.q_len < problem.kv_len


SPLIT_WAVE_TOLERANCE = 0.85  # split-KV: the fewest splits within this of the best wave efficiency


def choose_splits(programs: int, key_tiles: int, slots: int) -> int:
    """Split-KV as FlashAttention-2's num_splits_heuristic chooses it: none when the programs
    nearly fill the GPU, else the fewest splits whose wave efficiency (waves / whole waves) is
    within 85 % of the best, up to one split per key tile (max 128)."""
    if programs >= 0.8 * slots or key_tiles <= 1:
        return 1
    candidates = range(1, min(128, key_tiles) + 1)
    efficiency = {s: (programs * s / slots) / math.ceil(programs * s / slots) for s in candidates}
    best = max(efficiency.values())
    return min(s for s, e in efficiency.items() if e >= SPLIT_WAVE_TOLERANCE * best)


def forward_layout(cascade: Any, problem: Any, mapping: GpuMapping, roofs: GpuRoofs, slots: int) -> ForwardLayout:
    """Tiles, GQA packing (decode-like shapes put a group's query heads in one program) and
    split-KV (`choose_splits` over the `slots` of the GPU, unless the mapping fixes it)."""
    tiles = mapping.forward_tiles(problem.head_dim, decode=is_decode(problem))
    group = problem.group_size
    packed = problem.q_len < tiles.block_m and group > 1
    if packed:
        q_per_tile = min(problem.q_len, max(1, tiles.block_m // group))
        rows, heads = q_per_tile * group, problem.kv_heads
    else:
        q_per_tile = min(tiles.block_m, problem.q_len)
        rows, heads = q_per_tile, problem.q_heads
    counts = tile_mask(cascade, problem).tile_counts(q_per_tile, tiles.block_n)
    base = problem.batch * heads * counts.query_tiles
    most = int(counts.visited.max()) if counts.visited.size else 0
    splits = mapping.kv_splits
    if splits is None:
        splits = choose_splits(base, most, slots) if counts.query_tiles == 1 else 1
    splits = max(1, min(splits, max(1, most)))
    return ForwardLayout(tiles, rows, q_per_tile, heads, packed, splits, counts)


def forward_launches(cascade: Any, problem: Any, mapping: GpuMapping, roofs: GpuRoofs,
                     model: FittedModel) -> KernelLaunches:
    """One launch per pass of the cascade (and a merge launch for split-KV)."""
    kernel = style(mapping.kernel_style, model)
    tiles = mapping.forward_tiles(problem.head_dim, decode=is_decode(problem))
    fit = _resources(kernel, tiles, problem, mapping, roofs, model)
    slots = roofs.sm_count * max(1, fit.programs_per_sm)
    layout = forward_layout(cascade, problem, mapping, roofs, slots)
    plan = pass_plan(cascade, mapping.multipass)
    works = pass_work(plan, _padded_problem(problem, kernel), tiles.block_m, tiles.block_n)
    reread = l2_reread_factor(problem, layout.counts.query_tiles, layout.heads_of_programs, slots, roofs.llc_bytes)
    causal, window = cascade_mask(cascade, problem)
    sizes = bind(cascade, problem, tiles.block_n, layout.splits, window)
    traffic = attention_traffic(plan, problem, sizes, layout.counts, layout.heads_of_programs, layout.splits,
                                mapping.intermediate_bytes, reread)
    efficiency = _mma_efficiency(kernel, tiles, mapping, model, roofs.architecture)
    n_factor = _n_factor(plan, sizes, kernel, tiles, mapping, model, efficiency, roofs.architecture)
    warpgroups = kernel.warpgroups if kernel.mma != "triton" else max(1, tiles.num_warps // 4)
    scores = float(tiles.block_m * tiles.block_n)
    launches = []
    for k in range(1, plan.passes + 1):
        work = works[k]
        full = TileWork(work.tile.macs, n_factor, work.tile.sfu,
                        work.tile.fma + kernel.fit.extra_fma_per_score * scores, work.tile.input_bytes)
        partial = TileWork(full.macs, full.mma_efficiency, full.sfu_ops,
                           full.fma_ops + kernel.fit.mask_fma_per_score * scores, full.load_bytes)
        prologue = TileWork(work.program.macs, efficiency, work.program.sfu, work.program.fma, work.program.input_bytes)
        group = _forward_group(layout, problem, full, partial, prologue, kernel.longest_first)
        hbm = traffic.pass_bytes(k) + (traffic.split_bytes / 2 if k == plan.passes else 0.0)
        launches.append(Launch(f"pass {k}" if plan.passes > 1 else "forward", (group,), hbm,
                               fit.programs_per_sm, warpgroups, tiles.num_stages, fit.spilled_fraction,
                               hbm_load_fraction=min(1.0, reread / layout.counts.query_tiles)))
    if layout.splits > 1:
        launches.append(Launch("split-KV merge", (), traffic.split_bytes / 2 + 0.0, memory_only=True))
    launches = list(_mask_build(cascade, problem, mapping, model, ((layout.q_per_tile, tiles.block_n),))) + launches
    overlap = kernel.fit.softmax_overlap if mapping.softmax_overlap is None else mapping.softmax_overlap
    return KernelLaunches(tuple(launches), fit, kernel, overlap, layout, traffic, works)


def _mask_build(cascade: Any, problem: Any, mapping: GpuMapping, model: FittedModel,
                shapes: tuple[tuple[int, int], ...]) -> tuple[Launch, ...]:
    """einsim's compiled kernels build the block mask of a mask that reads data on every call
    (one set of tile lists per tile shape; `block_mask=` builds it once instead, the mapping's
    block_mask: prebuilt): its launches.
    Other styles take a prebuilt mask (FlexAttention's BlockMask), as do masks of coordinates."""
    mask = tile_mask(cascade, problem)
    if not isinstance(mask, DataMask) or mapping.kernel_style != "einsim" or mapping.block_mask == "prebuilt":
        return ()
    ops = lane_ops_per_pair(cascade)
    return tuple(launch for block_m, block_n in shapes for launch in build_launches(mask, block_m, block_n, ops))


def _forward_group(layout: ForwardLayout, problem: Any, full: TileWork, partial: TileWork, prologue: TileWork,
                   longest_first: bool) -> ProgramGroup:
    """Programs in grid order: query tiles fastest (longest first when the kernel says), then
    batch x heads; a split program takes its share of the query tile's key tiles. A mask that
    differs per batch element or head (counts.copies > 1) lays each copy's query tiles in turn;
    when GQA packs a group's heads into one program and the mask differs per head, the mean
    head stands for them."""
    counts = layout.counts
    copies, q_tiles = counts.copies, counts.query_tiles
    visited = counts.visited.astype(float).reshape(copies, q_tiles) / layout.splits
    full_tiles = counts.full.astype(float).reshape(copies, q_tiles) / layout.splits
    programs = problem.batch * layout.heads_of_programs
    if programs % copies:
        visited, full_tiles, copies = visited.mean(axis=0, keepdims=True), full_tiles.mean(axis=0, keepdims=True), 1
    tile_order = np.arange(q_tiles)[::-1] if longest_first else np.arange(q_tiles)
    order = (np.arange(copies)[:, None] * q_tiles + tile_order[None, :]).reshape(-1)
    visited, full_tiles = visited.reshape(-1), full_tiles.reshape(-1)
    partial_tiles = visited - full_tiles
    heads = programs // copies * layout.splits
    if np.all(visited == visited[0]) and np.all(full_tiles == full_tiles[0]):
        return ProgramGroup(full_tiles[:1], partial_tiles[:1], heads * visited.size, full, partial, prologue, "forward")
    return ProgramGroup(full_tiles[order], partial_tiles[order], heads, full, partial, prologue, "forward")


def _resources(kernel: KernelStyle, tiles: Tiles, problem: Any, mapping: GpuMapping, roofs: GpuRoofs,
               model: FittedModel) -> Residency:
    """Shared memory (the kernel's own figure when the mapping has it), registers (the compiled
    count, else the register model, for Triton kernels; hand-written kernels are taken not to
    spill) and programs per SM (the mapping's, when it fixes them)."""
    d, dv = padded_head_dim(problem.head_dim), padded_head_dim(problem.v_head_dim)
    smem = mapping.smem_bytes or attention_shared_memory(tiles.block_m, tiles.block_n, tiles.num_stages, d, dv,
                                                         problem.dtype_bytes)
    threads = tiles.num_warps * roofs.warp_size
    registers, spilled = 0, 0.0
    if kernel.mma == "triton":
        registers, spilled = model.registers.registers(tiles.block_m, tiles.block_n, d, dv, threads)
        if mapping.registers is not None:
            registers, spilled = mapping.registers, 0.0
    fit = residency(smem, registers, spilled, threads, roofs)
    if mapping.ctas_per_sm is not None and not fit.reasons:
        return Residency(fit.smem_bytes, fit.registers_per_thread, fit.spilled_fraction,
                         min(mapping.ctas_per_sm, max(1, fit.programs_per_sm)), "mapping", ())
    return fit


def _padded_problem(problem: Any, kernel: KernelStyle) -> Any:
    """The problem at the head dims the kernel's matmuls run at."""
    return replace(problem, head_dim=kernel.padded(problem.head_dim), v_head_dim=kernel.padded(problem.v_head_dim))


def _mma_efficiency(kernel: KernelStyle, tiles: Tiles, mapping: GpuMapping, model: FittedModel,
                    architecture: str = "hopper") -> float:
    """The style's fitted MMA efficiency; Triton kernels whose warpgroups hold fewer than 64 rows
    fall back from wgmma to mma.sync (model.mma_sync_ratio of the rate)."""
    if mapping.matmul_efficiency is not None:
        return mapping.matmul_efficiency
    efficiency = kernel.fit.mma_efficiency
    if architecture != "hopper":
        # no wgmma: mma.sync is the family's own instruction and its measured roof is mma.sync's,
        # so a kernel fitted on Hopper's mma.sync (FA2) sheds Hopper's mma.sync penalty
        return min(1.0, efficiency / model.mma_sync_ratio) if kernel.mma == "mma_sync" else efficiency
    if kernel.mma == "triton":
        rows_per_group = tiles.block_m // max(1, tiles.num_warps // 4) if tiles.num_warps >= 4 else tiles.block_m
        if tiles.num_warps < 4 or rows_per_group < 64 or rows_per_group % 64:
            efficiency *= model.mma_sync_ratio
    return efficiency


def _n_factor(plan: PassPlan, sizes: dict[str, int], kernel: KernelStyle, tiles: Tiles, mapping: GpuMapping,
              model: FittedModel, efficiency: float, architecture: str = "hopper") -> float:
    """MAC-weighted efficiency over the tile's matmuls: a Triton wgmma with N below 128 (the key
    tile for QK^T, Dv for P.V) loses (N / 128)^exponent of its rate."""
    if kernel.mma != "triton" or mapping.matmul_efficiency is not None or architecture != "hopper":
        return efficiency
    tile_sizes = dict(sizes, P=tiles.block_m, M=tiles.block_n)
    for rank in plan.family_m:
        tile_sizes[rank] = tiles.block_n if rank not in ("M1", "MC") else 1
    macs = seconds = 0.0
    for _, einsum in plan.runs():
        if not is_matmul(einsum) or not set(einsum.iteration_ranks) & plan.family_m:
            continue
        n = math.prod(tile_sizes.get(r, 1) for r in einsum.output_ranks
                      if r not in plan.family_p and r not in ("B", "H", "G"))
        work = math.prod(tile_sizes.get(r, 1) for r in einsum.iteration_ranks if r not in ("B", "H", "G"))
        macs += work
        seconds += work / (efficiency * min(1.0, (max(1, n) / 128) ** model.wgmma_n_exponent))
    return macs / seconds if seconds else efficiency


# --- the backward ----------------------------------------------------------------------------------


def backward_launches(cascade: Any, problem: Any, mapping: GpuMapping, roofs: GpuRoofs,
                      model: FittedModel) -> KernelLaunches:
    """Preprocess (delta = rowsum(dO * O)), then dK/dV programs (one per key tile and K/V head,
    walking the query tiles of the group's heads that see it: QK^T and P recomputed, dV += P^T dO,
    dP = dO V^T, dS = P (dP - delta), dK += dS^T Q), then dQ (dQ = dS K) by its own programs,
    in the dK/dV grid, or by fp32 atomics from the dK/dV programs plus a conversion."""
    kernel = style(mapping.kernel_style, model)
    dkdv, dq = mapping.backward_tiles(problem.head_dim)
    mode = mapping.dq_mode()
    plan = pass_plan(cascade, "recompute")
    score = _score_chain(plan, problem, dkdv)
    s = problem.dtype_bytes
    E, F = kernel.padded(problem.head_dim), kernel.padded(problem.v_head_dim)  # the matmuls' dims
    e, f = problem.head_dim, problem.v_head_dim  # the bytes' dims
    B, H, G, P, M = problem.batch, problem.q_heads, problem.kv_heads, problem.q_len, problem.kv_len
    efficiency = kernel.fit.bwd_mma_efficiency if mapping.matmul_efficiency is None else mapping.matmul_efficiency
    lanes = kernel.fit.bwd_fma_per_score
    latency = kernel.fit.bwd_program_latency_s
    q_rows, kv_rows = B * H * P, B * G * M
    preprocess = Launch("backward preprocess", (), q_rows * (2 * F * s + 2 * LSE_BYTES), memory_only=True)
    # dK/dV: per key tile of dkdv.block_n keys, query tiles of dkdv.block_m rows
    mask = tile_mask(cascade, problem)
    visited, full, key_copies = _key_walks(mask, problem, dkdv.block_m, dkdv.block_n)
    pair = float(dkdv.block_m * dkdv.block_n)
    macs = pair * (2 * E + 2 * F + (E if mode == "atomic" else 0))
    dq_bytes = dkdv.block_m * e * 4 if mode == "atomic" else 0.0
    tile = TileWork(macs, efficiency, pair * score.sfu, pair * (score.fma + lanes),
                    dkdv.block_m * ((e + f) * s + 2 * LSE_BYTES) + dq_bytes)
    masked = TileWork(tile.macs, efficiency, tile.sfu_ops, tile.fma_ops + pair * kernel.fit.mask_fma_per_score, tile.load_bytes)
    prologue = TileWork(load_bytes=dkdv.block_n * (e + f) * s * 2)
    dkdv_group = _key_group(visited, full, key_copies, tile, masked, prologue)
    reread = l2_reread_factor(problem, visited.size * key_copies // (B * G), G, roofs.sm_count, roofs.llc_bytes)
    kv_bytes = kv_rows * (e + f) * s * 2  # read K, V; write dK, dV
    q_side = q_rows * ((e + f) * s + 2 * LSE_BYTES) * reread
    # a dK/dV program holds its key tile (and dK, dV) and streams query tiles: the forward's
    # resource model with the roles of the two tile sizes exchanged
    fit = _resources(kernel, Tiles(0, dkdv.block_n, dkdv.block_m, dkdv.num_warps, dkdv.num_stages),
                     problem, mapping, roofs, model)
    warpgroups = kernel.warpgroups if kernel.mma != "triton" else max(1, dkdv.num_warps // 4)
    launches = [preprocess, *_mask_build(cascade, problem, mapping, model, ((dkdv.block_m, dkdv.block_n),) + (
        ((dq.block_m, dq.block_n),) if mode != "atomic" else ()))]
    groups = [dkdv_group]
    dkdv_hbm = kv_bytes + q_side
    if mode == "atomic":
        dkdv_hbm += q_rows * e * 4 * 2  # the fp32 dQ accumulator: zeroed, reduced into, read back
    else:
        counts = mask.tile_counts(dq.block_m, dq.block_n)
        pair_q = float(dq.block_m * dq.block_n)
        tile_q = TileWork(pair_q * (2 * E + F), efficiency, pair_q * score.sfu, pair_q * (score.fma + lanes),
                          dq.block_n * (e + f) * s)
        masked_q = TileWork(tile_q.macs, efficiency, tile_q.sfu_ops,
                            tile_q.fma_ops + pair_q * kernel.fit.mask_fma_per_score, tile_q.load_bytes)
        dq_group = _key_group(counts.visited, counts.full, B * H // counts.copies, tile_q, masked_q,
                              TileWork(load_bytes=dq.block_m * ((e + f) * s + 2 * LSE_BYTES)))
        dq_hbm = q_rows * ((2 * e + f) * s + 2 * LSE_BYTES) + B * G * M * (e + f) * s * l2_reread_factor(
            problem, counts.query_tiles, H, roofs.sm_count, roofs.llc_bytes)
        if mode == "one_launch":
            groups.append(dq_group)
            dkdv_hbm += dq_hbm
        else:
            launches.append(Launch("backward dK/dV", tuple(groups), dkdv_hbm, fit.programs_per_sm, warpgroups,
                                   dkdv.num_stages, fit.spilled_fraction, program_latency_s=latency))
            groups = []
            launches.append(Launch("backward dQ", (dq_group,), dq_hbm, fit.programs_per_sm, warpgroups,
                                   dq.num_stages, fit.spilled_fraction, program_latency_s=latency))
    if groups:
        name = "backward dK/dV + dQ" if mode == "one_launch" else "backward dK/dV (dQ by atomics)"
        launches.append(Launch(name, tuple(groups), dkdv_hbm, fit.programs_per_sm, warpgroups, dkdv.num_stages,
                               fit.spilled_fraction, program_latency_s=latency))
    if mode == "atomic":
        launches.append(Launch("backward dQ conversion", (), q_rows * e * (4 + s), memory_only=True))
    overlap = kernel.fit.softmax_overlap if mapping.softmax_overlap is None else mapping.softmax_overlap
    return KernelLaunches(tuple(launches), fit, kernel, overlap)


def _key_walks(mask: Any, problem: Any, block_m: int, block_n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per dK/dV program (a key tile of one K/V head): the query tiles it walks over its GQA
    group's heads and how many need no mask, in grid order, and how many times that pattern
    repeats over batch x K/V heads. A mask that differs per head sums its group's own heads."""
    group, programs = problem.group_size, problem.batch * problem.kv_heads
    visited, full = mask.key_tile_counts(block_m, block_n)
    if not isinstance(mask, DataMask):
        return visited * group, full * group, programs
    copies = mask.key_copies(block_m, block_n)
    axis = mask.heads_axis(block_m, block_n)
    if axis is not None and group > 1:  # copies over (..., H, ...): sum each K/V head's group
        shape = mask.classification(block_m, block_n).state.shape[:-2]
        split = shape[:axis] + (shape[axis] // group, group) + shape[axis + 1:]
        visited = visited.reshape(split + (-1,)).sum(axis=axis + 1).reshape(-1)
        full = full.reshape(split + (-1,)).sum(axis=axis + 1).reshape(-1)
        copies //= group
    elif axis is None:
        visited, full = visited * group, full * group
    if programs % copies:  # the mean copy stands for a layout the copies do not tile
        visited = visited.reshape(copies, -1).mean(axis=0)
        full = full.reshape(copies, -1).mean(axis=0)
        copies = 1
    return visited, full, programs // copies


def _key_group(visited: np.ndarray, full: np.ndarray, copies: int, tile: TileWork, masked: TileWork,
               prologue: TileWork) -> ProgramGroup:
    """Programs of one tile loop, `copies` times over (batch x heads) in grid order."""
    visited = np.asarray(visited, dtype=float)
    full = np.asarray(full, dtype=float)
    if np.all(visited == visited[0]) and np.all(full == full[0]):
        return ProgramGroup(full[:1], visited[:1] - full[:1], copies * visited.size, tile, masked, prologue)
    return ProgramGroup(full, visited - full, copies, tile, masked, prologue)


@dataclass(frozen=True)
class _ScoreChain:
    sfu: float  # SFU ops per score of the forward's score chain (exp, special functions)
    fma: float  # lane ops per score of it


def _score_chain(plan: PassPlan, problem: Any, tiles: Tiles) -> _ScoreChain:
    """Per-score work the backward recomputes from the forward cascade: the Einsums over a whole
    (query, key) tile except the matmuls (QK^T is counted with the backward's own matmuls), i.e.
    the exp and any score modification a user cascade adds (bias, soft-cap)."""
    works = pass_work(plan, problem, tiles.block_m, tiles.block_n)
    scores = float(tiles.block_m * tiles.block_n)
    sfu = fma = 0.0
    for work in works.values():
        ops = _per_score_einsums(work.tile, plan, scores)
        sfu += ops[0]
        fma += ops[1]
    return _ScoreChain(sfu / scores, fma / scores)


def _per_score_einsums(tile: UnitOps, plan: PassPlan, scores: float) -> tuple[float, float]:
    sfu = fma = 0.0
    for name, ops in tile.by_einsum.items():
        count = max(ops.values()) if ops else 0.0
        if count < scores or "mac" in ops:  # row statistics and matmuls are not per-score work
            continue
        _, s, f = unit_split(ops)
        sfu += s
        fma += f
    return sfu, fma
