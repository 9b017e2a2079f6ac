"""Per-config GPU time model of the Triton attention kernels: does a config fit, and how long
will it take. The autotuner ranks and prunes configs with it before compiling any of them.

Torch-free. Every term is written down in docs/autotune.md § The kernel-time model; the
constants in `ModelParams` are the ones the H100 validation (benchmarks/validate_autotune.py)
checked, and the doc says which configs the model still mispredicts and why.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass, field
from typing import Any

from einsim.errors import ConfigError

# Kernels whose programs each own one query tile of one (batch, head) and stream K/V tiles
# through a FlashAttention-2 style online softmax; the multi-pass kernels repeat that loop.
FLASH_LIKE = {"attention-fwd": 1, "attention-2pass-fwd": 2, "attention-3pass-fwd": 3}
# Kernels that launch their longest query tiles first (attention-fwd reverses program_id(0)).
LONGEST_FIRST = {"attention-fwd"}


@dataclass(frozen=True)
class ModelParams:
    """Efficiencies and latencies the analytical terms cannot derive from the target alone."""

    # Tensor-core issue efficiency by instruction family (Triton picks wgmma when a warpgroup's
    # share of BLOCK_M is a multiple of 64 on Hopper, mma.sync otherwise).
    wgmma_efficiency: float = 0.5
    mma_sync_efficiency: float = 0.21
    # wgmma's N (BLOCK_N for Q·Kᵀ, Dv for P·V) below this loses issue efficiency ∝ (N/ref)^exponent.
    wgmma_reference_n: int = 128
    wgmma_n_exponent: float = 0.39
    # Fraction of softmax a single warpgroup overlaps with its own asynchronous matmuls; more
    # warpgroups and co-resident programs overlap the rest (docs/autotune.md § The kernel-time model).
    async_overlap: float = 0.21
    # Stages that do not prefetch: Triton's ring of num_stages buffers keeps num_stages - this
    # many K/V tiles in flight ahead of the one being used.
    stage_offset: int = 1
    # Each loop of a program (the unmasked middle, the masked diagonal) refills its pipeline:
    # this many load latencies per loop, before co-resident streams hide them.
    pipeline_fills_per_loop: float = 0.0
    # Softmax work on the FP32 lanes per score element: scale, max, subtract, convert, add, the
    # rescale of the accumulator amortised (docs/autotune.md: counted from the Triton tutorial loop).
    vector_ops_per_score: float = 10.3
    # Extra lane-ops per score on tiles the causal/window mask cuts (the where() and the index math).
    mask_ops_per_score: float = 12.0
    # Load latency a K/V tile waits when nothing hides it (L2 hit mixed with HBM, loaded GPU).
    load_latency_s: float = 1.3e-06
    # Fixed cost of one program: Q load, epilogue, O store, scheduling (seconds).
    program_overhead_s: float = 3.1e-06
    # Per K/V tile loop-iteration overhead in instruction-issue cycles (address math, barriers).
    tile_overhead_cycles: float = 62.0
    # Registers a thread needs: a base (addresses, loop state) plus its share of the fp32
    # accumulator (BLOCK_M x Dv), the scores (BLOCK_M x BLOCK_N) and the K tile (BLOCK_N x D).
    # Least squares over 26 compiled forward kernels' register counts on the H100 (ptxas).
    base_registers: int = 37
    registers_per_accumulator: float = 1.08
    registers_per_score: float = 0.90
    registers_per_key: float = 0.73
    max_registers_per_thread: int = 255
    # Each 1 % of a thread's live tile state that spills to local memory costs this much time.
    spill_penalty: float = 0.03
    # Shared memory the runtime reserves per resident program (CUDA reserves 1 KiB per block).
    reserved_shared_memory: int = 1024
    # Fraction of HBM bandwidth reachable by a kernel (the copy ceiling already measures it).
    hbm_efficiency: float = 1.0
    # Decode: bytes in flight a memory pipeline needs per SM to reach the bandwidth (Little's law
    # uses load_latency_s; this caps what one program can keep in flight per stage).
    max_programs_per_sm: int = 32
    # The fitted constants pin down ranks, not the absolute level: this factor brings the forward
    # makespan to the median measured time (H100 validation, docs/autotune.md).
    forward_time_scale: float = 0.69
    # Split-KV decode has its own latency and overheads (fitted on the decode measurements).
    decode_load_latency_s: float = 1.0e-6
    decode_program_overhead_s: float = 1.5e-6
    decode_tile_overhead_cycles: float = 120.0


DEFAULT_PARAMS = ModelParams()


@dataclass(frozen=True)
class KernelPrediction:
    """What the model says about one config of one kernel for one problem on one GPU."""

    kernel: str
    config: dict[str, Any]
    time_s: float  # predicted kernel time (inf when the config does not fit)
    fits: bool
    reasons: tuple[str, ...] = ()  # why it does not fit (empty when it fits)
    smem_bytes: int = 0  # shared memory one program needs
    registers_per_thread: int = 0
    spilled_fraction: float = 0.0
    ctas_per_sm: int = 0  # resident programs per SM
    occupancy: float = 0.0  # resident warps / the SM's maximum
    programs: int = 0  # programs (CTAs) in the grid, all launches together
    waves: float = 0.0  # programs / resident slots, rounded up
    wave_efficiency: float = 0.0  # busy slot-time / (makespan x slots)
    bound: str = ""  # the term that sets time_s
    tensor_core_s: float = 0.0  # whole-kernel times of each roof alone (before overlap)
    exp_s: float = 0.0
    vector_s: float = 0.0
    l2_s: float = 0.0
    hbm_s: float = 0.0
    latency_s: float = 0.0  # exposed load latency (not hidden by stages or co-resident warps)
    hbm_bytes: float = 0.0
    l2_bytes: float = 0.0
    flops: float = 0.0
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Roofs:
    """The numbers of a GPU target the model needs (from einsim.simulator.gpu.gpu_roofs)."""

    name: str
    sm_count: int
    clock_hz: float
    matmul_flops: float  # FLOP/s, whole chip, for the kernel's dtype
    exp_per_s: float
    vector_ops_per_s: float  # FP32 lane operations per second, whole chip
    hbm_bytes_per_s: float
    l2_bytes_per_s: float
    l2_bytes: float
    smem_per_sm: int
    smem_per_block: int
    registers_per_sm: int  # 32-bit registers
    max_threads_per_sm: int = 2048
    launch_overhead_s: float = 3e-6


# --------------------------------------------------------------------------------------------
# Roofs of a target
# --------------------------------------------------------------------------------------------

def roofs_of(target: Any, dtype: str = "bf16") -> Roofs:
    """Roofs from `einsim.simulator.gpu.gpu_roofs(target, dtype)` where it exists, else from
    the target's own fields (the same sources: measured peaks first, then datasheet)."""
    if isinstance(target, Roofs):
        return target
    if isinstance(target, str):
        from einsim.targets import load_target

        target = load_target(target)
    if getattr(target, "kind", "gpu") != "gpu":
        raise ConfigError(f"target {getattr(target, 'name', target)!r} is not a GPU: the kernel model needs one")
    external = None
    try:
        from einsim.simulator.gpu import gpu_roofs  # the simulator's own GPU roofs (helper T)

        external = gpu_roofs(target, dtype)
    except ImportError:
        external = None
    fallback = _roofs_from_target(target, dtype)
    if external is None:
        return fallback

    def pick(names: tuple[str, ...], default: float) -> float:
        for name in names:
            value = external.get(name) if isinstance(external, dict) else getattr(external, name, None)
            if value:
                return value
        return default

    return dataclasses.replace(
        fallback,
        sm_count=int(pick(("sm_count", "sms", "parallel_units"), fallback.sm_count)),
        matmul_flops=float(pick(("matmul_flops", "matmul_flops_per_s", "tensor_flops"), fallback.matmul_flops)),
        exp_per_s=float(pick(("exp_per_s", "exps_per_s", "exp_ops_per_s"), fallback.exp_per_s)),
        vector_ops_per_s=float(pick(("vector_ops_per_s", "vector_flops", "fp32_ops_per_s"), fallback.vector_ops_per_s)),
        hbm_bytes_per_s=float(pick(("hbm_bytes_per_s", "hbm_bandwidth", "hbm_bw"), fallback.hbm_bytes_per_s)),
        l2_bytes_per_s=float(pick(("l2_bytes_per_s", "l2_bandwidth"), fallback.l2_bytes_per_s)),
        l2_bytes=float(pick(("l2_bytes", "l2_capacity_bytes"), fallback.l2_bytes)),
        smem_per_sm=int(pick(("smem_per_sm", "shared_memory_per_sm", "smem_bytes_per_sm"), fallback.smem_per_sm)),
    )


def _roofs_from_target(target: Any, dtype: str) -> Roofs:
    matrix = target.unit("matrix")
    macs, _ = target.peak_ops_per_s(matrix, dtype)
    exps, _ = target.peak_ops_per_s(target.unit("exp"), "fp32")
    vector, _ = target.peak_ops_per_s(target.unit("vector"), "fp32")
    levels = {level.name: level for level in target.memory_levels}
    smem = levels.get("shared_memory")
    l2 = levels.get("l2")
    registers = levels.get("registers")
    smem_per_sm = int(smem.capacity_bytes) if smem else 233472
    return Roofs(
        name=target.name,
        sm_count=int(target.parallel_units),
        clock_hz=float(target.clock_hz),
        matmul_flops=2.0 * macs,
        exp_per_s=exps,
        vector_ops_per_s=vector,
        hbm_bytes_per_s=target.offchip.bandwidth("measured"),
        l2_bytes_per_s=l2.bandwidth("measured") if l2 else 5.5e12,
        l2_bytes=l2.capacity_bytes if l2 else 50e6,
        smem_per_sm=smem_per_sm,
        smem_per_block=smem_per_sm - 1024,
        registers_per_sm=int(registers.capacity_bytes // 4) if registers else 65536,
        launch_overhead_s=float(getattr(target, "launch_overhead_s", 0.0) or 3e-6),
    )


# --------------------------------------------------------------------------------------------
# Shared pieces: registers, residency, scheduling
# --------------------------------------------------------------------------------------------

def _next_pow2(value: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, value))))


def _dtype_bytes(problem: Any) -> int:
    return 4 if getattr(problem, "dtype", "bf16") in ("fp32", "float32") else 2


def _dims(problem: Any) -> tuple[int, int]:
    dv = getattr(problem, "v_head_dim", None) or problem.head_dim
    return max(16, _next_pow2(problem.head_dim)), max(16, _next_pow2(dv))


def _as_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return dict(config)


def _registers(tile_state_fp32: float, threads: int, params: ModelParams) -> tuple[int, float]:
    """(registers a thread asks for, fraction of its tile state that spills); tile_state_fp32 is
    the weighted tile elements the thread's warps hold (see ModelParams.registers_per_*)."""
    wanted = params.base_registers + tile_state_fp32 / threads
    if wanted <= params.max_registers_per_thread:
        return int(math.ceil(wanted / 8) * 8), 0.0
    spilled = (wanted - params.max_registers_per_thread) / max(1.0, tile_state_fp32 / threads)
    return params.max_registers_per_thread + 1, min(1.0, spilled)  # 256 after rounding


def _residency(smem: int, registers: int, threads: int, roofs: Roofs, params: ModelParams) -> tuple[int, str]:
    """(resident programs per SM, the resource that limits it)."""
    limits = {
        "shared memory": roofs.smem_per_sm // max(1, smem + params.reserved_shared_memory),
        "registers": roofs.registers_per_sm // max(1, min(registers, 256) * threads),
        "threads": roofs.max_threads_per_sm // threads,
        "program slots": params.max_programs_per_sm,
    }
    resource = min(limits, key=lambda name: limits[name])
    return max(0, limits[resource]), resource


def _makespan(durations: list[tuple[float, int]], slots: int) -> float:
    """Greedy in-order dispatch of programs to `slots` (the block scheduler's behaviour):
    `durations` is [(seconds, how many programs in a row)], in grid order."""
    total = sum(count for _, count in durations)
    if total == 0:
        return 0.0
    if len(durations) == 1:  # uniform programs: whole waves
        seconds, count = durations[0]
        return math.ceil(count / slots) * seconds
    if total > 200_000:  # many waves: the tail is a small part; mean work plus one longest program
        work = sum(seconds * count for seconds, count in durations)
        return work / slots + max(seconds for seconds, _ in durations) * 0.5
    heap = [0.0] * min(slots, total)
    heapq.heapify(heap)
    for seconds, count in durations:
        for _ in range(count):
            start = heapq.heappop(heap)
            heapq.heappush(heap, start + seconds)
    return max(heap)


# --------------------------------------------------------------------------------------------
# FlashAttention-style forward (one program per query tile of one head)
# --------------------------------------------------------------------------------------------

def _visited_tiles(q_start: int, problem: Any, block_m: int, block_n: int) -> tuple[int, int]:
    """(K/V tiles a query tile visits, how many of them the mask cuts), bottom-right masks."""
    offset = problem.kv_len - problem.q_len
    first_row = q_start + offset
    last_row = min(q_start + block_m, problem.q_len) - 1 + offset
    lo, hi = 0, problem.kv_len
    if problem.causal:
        hi = min(hi, last_row + 1)
    window = getattr(problem, "window", None)
    if window is not None:
        lo = max(0, first_row - window[0])
        hi = min(hi, last_row + window[1] + 1)
    lo = (lo // block_n) * block_n
    if hi <= lo:
        return 0, 0
    tiles = -(-(hi - lo) // block_n)
    # Tiles fully visible to every row of the query tile need no mask.
    full_lo, full_hi = 0, problem.kv_len
    if problem.causal:
        full_hi = min(full_hi, first_row + 1)
    if window is not None:
        full_lo = max(0, last_row - window[0])
        full_hi = min(full_hi, first_row + window[1] + 1)
    unmasked = 0
    for t in range(tiles):
        start = lo + t * block_n
        if start >= full_lo and min(start + block_n, problem.kv_len) <= full_hi and start + block_n <= problem.kv_len:
            unmasked += 1
    partial_last = problem.kv_len % block_n != 0  # the ragged last tile is masked too
    masked = tiles - unmasked
    if partial_last and masked == 0 and hi == problem.kv_len:
        masked = 1
    return tiles, masked


def _tensor_efficiency(block_rows_per_group: int, n: int, num_warps: int, params: ModelParams) -> float:
    if num_warps >= 4 and block_rows_per_group >= 64 and block_rows_per_group % 64 == 0:
        base = params.wgmma_efficiency
    else:
        base = params.mma_sync_efficiency
    return base * min(1.0, (n / params.wgmma_reference_n) ** params.wgmma_n_exponent)


def _predict_flash(kernel: str, cfg: dict[str, Any], problem: Any, roofs: Roofs, params: ModelParams,
                   smem: int, reasons: list[str]) -> KernelPrediction:
    passes = FLASH_LIKE[kernel]
    block_m, block_n = int(cfg["BLOCK_M"]), int(cfg["BLOCK_N"])
    num_warps, num_stages = int(cfg.get("num_warps", 4)), int(cfg.get("num_stages", 2))
    threads = num_warps * 32
    d, dv = _dims(problem)
    s = _dtype_bytes(problem)
    notes: list[str] = []

    state = (params.registers_per_accumulator * block_m * dv + params.registers_per_score * block_m * block_n
             + params.registers_per_key * block_n * d)
    registers, spilled = _registers(state, threads, params)
    if spilled:
        notes.append(f"{spilled:.0%} of a thread's tile state spills to local memory")
    per_sm, limiter = _residency(smem, registers, threads, roofs, params)
    if smem > roofs.smem_per_block:
        reasons.append(f"needs {smem} bytes of shared memory per program, the GPU allows {roofs.smem_per_block}")
    if reasons or per_sm == 0:
        if not reasons:
            reasons.append(f"no program fits on an SM (limited by {limiter})")
        return KernelPrediction(kernel=kernel, config=cfg, time_s=math.inf, fits=False, reasons=tuple(reasons),
                                smem_bytes=smem, registers_per_thread=registers, spilled_fraction=spilled)

    sms = roofs.sm_count
    warpgroups = max(1, num_warps // 4)
    rows_per_group = block_m // warpgroups if num_warps >= 4 else block_m
    eff_qk = _tensor_efficiency(rows_per_group, block_n, num_warps, params)
    eff_pv = _tensor_efficiency(rows_per_group, dv, num_warps, params)
    tc_rate = roofs.matmul_flops / sms  # per SM
    exp_rate = roofs.exp_per_s / sms
    vec_rate = roofs.vector_ops_per_s / sms
    l2_rate = roofs.l2_bytes_per_s / sms
    issue_cycles = params.tile_overhead_cycles / roofs.clock_hz

    # Per-tile costs on one SM (seconds of that unit). A pass that only gathers statistics skips
    # P·V; the output pass of every kernel does both matmuls.
    def tile_costs(masked: bool, output_pass: bool) -> tuple[float, float, float, float]:
        scores = block_m * block_n
        tc = 2 * scores * d / (tc_rate * eff_qk)
        if output_pass:
            tc += 2 * scores * dv / (tc_rate * eff_pv)
        ops = params.vector_ops_per_score + (params.mask_ops_per_score if masked else 0.0)
        vec = scores * ops / vec_rate
        ex = scores / exp_rate
        load = block_n * (d + (dv if output_pass else 0)) * s / l2_rate
        return tc, ex, vec, load

    # Independent instruction streams an SM can interleave: co-resident programs and the warpgroups
    # of each (a warpgroup waits on its own matmul before its softmax; another one fills the gap).
    streams = per_sm * warpgroups
    overlap = 1.0 - (1.0 - params.async_overlap) / streams
    prefetch = max(0, num_stages - params.stage_offset)
    spill_factor = 1.0 + params.spill_penalty * 100 * spilled

    q_tiles = -(-problem.q_len // block_m)
    heads = problem.batch * problem.q_heads
    totals = {"tensor_core": 0.0, "exp": 0.0, "vector": 0.0, "l2": 0.0, "latency": 0.0}
    durations: list[tuple[float, int]] = []
    kv_tiles_total = 0
    for pass_index in range(passes):
        output_pass = pass_index == passes - 1
        full = tile_costs(False, output_pass)
        cut = tile_costs(True, output_pass)
        per_tile = []
        for masked_kind in (full, cut):
            tc, ex, vec, load = masked_kind
            compute = tc + ex + vec + issue_cycles
            busy = max(tc, ex + vec, load)
            # SM time per tile: the busiest unit, plus the part of the others that does not overlap.
            sm_time = busy + (1.0 - overlap) * (compute - busy if compute > busy else 0.0)
            # Load latency: each stage beyond the first prefetches a tile ahead; co-resident
            # streams hide what remains.
            hidden = prefetch * compute * streams
            exposed = max(0.0, params.load_latency_s - hidden) / streams
            per_tile.append((sm_time * spill_factor, exposed, masked_kind))
        for q in range(q_tiles):
            tiles, masked = _visited_tiles(q * block_m, problem, block_m, block_n)
            kv_tiles_total += tiles * heads
            plain = tiles - masked
            loops = (1 if plain else 0) + (1 if masked else 0)
            program = (params.program_overhead_s
                       + loops * params.pipeline_fills_per_loop * params.load_latency_s) / streams
            for count, (sm_time, exposed, costs) in ((plain, per_tile[0]), (masked, per_tile[1])):
                program += count * (sm_time + exposed)
                totals["tensor_core"] += count * costs[0] * heads
                totals["exp"] += count * costs[1] * heads
                totals["vector"] += count * costs[2] * heads
                totals["l2"] += count * costs[3] * heads
                totals["latency"] += count * exposed * heads
            # A program shares its SM with per_sm - 1 others: its wall time is per_sm x its SM time.
            durations.append((program * per_sm, heads))
    # Grid order: program_id(0) = query tile (fastest), program_id(1) = batch x head.
    if len({seconds for seconds, _ in durations}) == 1:
        durations = [(durations[0][0], heads * q_tiles * passes)]
    else:
        durations = _interleave(durations, heads, q_tiles, passes, reverse=kernel in LONGEST_FIRST)
    slots = sms * per_sm
    programs = heads * q_tiles * passes
    makespan = _makespan(durations, slots)
    work = sum(seconds * count for seconds, count in durations)
    wave_eff = work / (makespan * slots) if makespan > 0 else 0.0
    makespan *= params.forward_time_scale

    # HBM: Q, O once per pass/output; K/V once per (batch, kv head) when the query tiles that
    # share them are resident together, more when a head's K/V falls out of L2 between them.
    kv_bytes_head = problem.kv_len * (d + dv) * s
    kv_heads = problem.batch * problem.kv_heads
    concurrent_heads = max(1.0, slots / max(1, q_tiles))
    l2_share = roofs.l2_bytes / (kv_bytes_head * concurrent_heads / max(1, problem.q_heads // problem.kv_heads))
    reread = 1.0 if l2_share >= 1.0 else min(float(q_tiles), 1.0 / max(l2_share, 1e-9))
    hbm = passes * heads * problem.q_len * d * s + heads * problem.q_len * dv * s
    hbm += passes * kv_heads * kv_bytes_head * reread
    hbm_s = hbm / (roofs.hbm_bytes_per_s * params.hbm_efficiency)
    l2_bytes = kv_tiles_total * block_n * (d + dv) * s

    time_s = max(makespan, hbm_s) + passes * roofs.launch_overhead_s
    # The unit that bounds: compare each roof over all SMs with the makespan.
    whole = {name: value / sms for name, value in totals.items()}
    whole["hbm"] = hbm_s
    bound = max(whole, key=lambda name: whole[name])
    if hbm_s >= makespan:
        bound = "hbm"
    elif wave_eff < 0.75:
        bound = "waves"
    flops = 2.0 * sum(
        _visited_tiles(q * block_m, problem, block_m, block_n)[0] for q in range(q_tiles)
    ) * heads * block_m * block_n * (d + dv)
    if limiter != "program slots":
        notes.append(f"{per_sm} program(s) per SM, limited by {limiter}")
    return KernelPrediction(
        kernel=kernel, config=cfg, time_s=time_s, fits=True, smem_bytes=smem,
        registers_per_thread=registers, spilled_fraction=spilled, ctas_per_sm=per_sm,
        occupancy=per_sm * num_warps * 32 / roofs.max_threads_per_sm, programs=programs,
        waves=math.ceil(programs / slots), wave_efficiency=wave_eff, bound=bound,
        tensor_core_s=whole["tensor_core"], exp_s=whole["exp"], vector_s=whole["vector"],
        l2_s=whole["l2"], hbm_s=hbm_s, latency_s=whole["latency"], hbm_bytes=hbm, l2_bytes=l2_bytes,
        flops=flops, notes=tuple(notes),
    )


def _interleave(per_query_tile: list[tuple[float, int]], heads: int, q_tiles: int, passes: int,
                reverse: bool = False) -> list[tuple[float, int]]:
    """Programs in grid order for unequal query tiles: for each pass, for each head, every query
    tile; runs of equal durations are merged."""
    out: list[tuple[float, int]] = []
    for p in range(passes):
        block = [seconds for seconds, _ in per_query_tile[p * q_tiles:(p + 1) * q_tiles]]
        if reverse:
            block.reverse()
        if heads * q_tiles > 200_000:
            out.extend((seconds, heads) for seconds in block)
            continue
        for _ in range(heads):
            for seconds in block:
                if out and out[-1][0] == seconds:
                    out[-1] = (seconds, out[-1][1] + 1)
                else:
                    out.append((seconds, 1))
    return out


# --------------------------------------------------------------------------------------------
# Split-KV decode (memory-bound: bytes in flight decide the bandwidth reached)
# --------------------------------------------------------------------------------------------

def _decode_plan(cfg: dict[str, Any], problem: Any, config: Any, device: Any) -> tuple[int, int, int]:
    """(splits, keys per split, keys in total) as the kernel will choose them."""
    try:
        from einsim.kernels.decode import config as decode_config

        plan = decode_config.split_plan(problem, config, device)
        return plan.num_splits, plan.split_len, plan.kv_hi - plan.kv_lo
    except (ImportError, AttributeError, TypeError):
        keys = problem.kv_len
        splits = int(cfg.get("NUM_SPLITS") or 1)
        split_len = -(-keys // splits)
        return splits, split_len, keys


def _predict_decode(kernel: str, cfg: dict[str, Any], config: Any, problem: Any, roofs: Roofs,
                    params: ModelParams, smem: int, reasons: list[str], device: Any) -> KernelPrediction:
    block_m, block_n = int(cfg.get("BLOCK_M", 16)), int(cfg["BLOCK_N"])
    num_warps, num_stages = int(cfg.get("num_warps", 4)), int(cfg.get("num_stages", 2))
    threads = num_warps * 32
    d, dv = _dims(problem)
    s = _dtype_bytes(problem)
    notes: list[str] = []
    state = block_m * dv + 1.5 * block_m * block_n + 2 * block_m
    registers, spilled = _registers(state, threads, params)
    per_sm, limiter = _residency(smem, registers, threads, roofs, params)
    if smem > roofs.smem_per_block:
        reasons.append(f"needs {smem} bytes of shared memory per program, the GPU allows {roofs.smem_per_block}")
    if reasons or per_sm == 0:
        if not reasons:
            reasons.append(f"no program fits on an SM (limited by {limiter})")
        return KernelPrediction(kernel=kernel, config=cfg, time_s=math.inf, fits=False, reasons=tuple(reasons),
                                smem_bytes=smem, registers_per_thread=registers, spilled_fraction=spilled)

    sms = roofs.sm_count
    splits, split_len, keys = _decode_plan(cfg, problem, config, device)
    rows = (problem.q_heads // problem.kv_heads) * problem.q_len
    row_tiles = -(-rows // block_m)
    groups = problem.batch * problem.kv_heads
    programs = groups * row_tiles * splits
    slots = sms * per_sm
    waves = math.ceil(programs / slots)
    active_per_sm = min(per_sm, programs / sms)  # programs per SM while the first wave runs
    tiles_per_program = -(-split_len // block_n)
    tile_bytes = block_n * (d + dv) * s

    # Bandwidth one SM reaches: bytes in flight over the load latency (Little's law). Each
    # program keeps max(1, stages - 1) tiles in flight ahead of the one it computes on.
    in_flight = max(1, num_stages - 1) * tile_bytes * active_per_sm
    sm_bandwidth = in_flight / params.decode_load_latency_s
    busy_sms = min(sms, programs)
    reach = min(roofs.hbm_bytes_per_s * params.hbm_efficiency, sm_bandwidth * busy_sms)
    kv_bytes = groups * keys * (d + dv) * s * row_tiles
    partial_rows = groups * splits * rows
    partial_bytes = partial_rows * (dv + 2) * 4
    q_bytes = problem.batch * problem.q_heads * problem.q_len * (d + dv) * s
    hbm = kv_bytes + q_bytes + 2 * partial_bytes

    # Compute per tile (small matmuls on mma.sync, exp, softmax), per SM.
    tc_rate = roofs.matmul_flops / sms * params.mma_sync_efficiency
    scores = block_m * block_n
    compute_tile = (2 * scores * (d + dv) / tc_rate + scores / (roofs.exp_per_s / sms)
                    + scores * params.vector_ops_per_score / (roofs.vector_ops_per_s / sms)
                    + params.decode_tile_overhead_cycles * max(1, 4 // num_warps) / roofs.clock_hz)
    compute_s = programs * tiles_per_program * compute_tile / min(sms, programs)
    memory_s = kv_bytes / reach
    # Wave quantisation: a last partial wave streams its share at the same per-program rate.
    wave_eff = programs / (waves * slots) if waves > 1 else 1.0
    split_s = max(memory_s, compute_s) / (wave_eff if waves > 1 else 1.0)
    split_s += params.decode_program_overhead_s * waves
    # The kernel always runs its merge launch, also with one split.
    merge_s = 2 * partial_bytes / roofs.hbm_bytes_per_s + roofs.launch_overhead_s
    launches = 2
    time_s = split_s + merge_s + roofs.launch_overhead_s
    bound = "hbm" if reach >= roofs.hbm_bytes_per_s * params.hbm_efficiency * 0.999 and memory_s >= compute_s else (
        "latency" if memory_s >= compute_s else "compute")
    if programs < sms:
        notes.append(f"{programs} programs leave {sms - programs} of {sms} SMs idle")
    notes.append(f"{splits} split(s) of {split_len} keys, {launches} launch(es)")
    return KernelPrediction(
        kernel=kernel, config=cfg, time_s=time_s, fits=True, smem_bytes=smem, registers_per_thread=registers,
        spilled_fraction=spilled, ctas_per_sm=per_sm, occupancy=per_sm * threads / roofs.max_threads_per_sm,
        programs=programs, waves=waves, wave_efficiency=wave_eff, bound=bound,
        tensor_core_s=compute_s, hbm_s=memory_s, latency_s=max(0.0, memory_s - kv_bytes / roofs.hbm_bytes_per_s),
        hbm_bytes=hbm, l2_bytes=kv_bytes, flops=4.0 * problem.batch * problem.q_heads * problem.q_len * keys * d,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------

def predict_kernel(kernel_name: str, config: Any, problem: Any, target: Any, *,
                   params: ModelParams = DEFAULT_PARAMS) -> KernelPrediction:
    """Predicted time, fit and resource use of `config` for `kernel_name` on `problem`.

    `target` is a Target, a preset name or a `Roofs`. Configs the kernel itself rejects
    (`KernelSpec.check_config`) and configs that overflow shared memory come back with
    fits=False, time_s=inf and the reasons; nothing raises for a config that cannot run.
    """
    cfg = _as_dict(config)
    dtype = getattr(problem, "dtype", "bf16")
    roofs = roofs_of(target, dtype)
    reasons: list[str] = []
    spec = _spec(kernel_name)
    device = _device_limits(roofs)
    smem = None
    if spec is not None:
        typed = config if not isinstance(config, dict) else spec.config_type(**config)
        try:
            reasons.extend(spec.check_config(typed, problem, device))
        except TypeError:
            reasons.extend(spec.check_config(typed, problem))
        try:
            smem = int(spec.shared_memory_bytes(typed, problem))
        except (TypeError, ValueError, AttributeError, KeyError):
            smem = None
        config = typed
    if smem is None:
        d, dv = _dims(problem)
        smem = _dtype_bytes(problem) * (int(cfg["BLOCK_M"]) * d
                                        + int(cfg.get("num_stages", 2)) * int(cfg["BLOCK_N"]) * (d + dv))
    if kernel_name in FLASH_LIKE:
        return _predict_flash(kernel_name, cfg, problem, roofs, params, smem, reasons)
    if kernel_name == "decode":
        return _predict_decode(kernel_name, cfg, config, problem, roofs, params, smem, reasons, device)
    raise ConfigError(f"the kernel model has no formula for kernel {kernel_name!r}; "
                      f"it knows {', '.join(sorted([*FLASH_LIKE, 'decode']))}")


def _spec(kernel_name: str) -> Any:
    try:
        from einsim.kernels.registry import KERNELS
    except ImportError:
        return None
    return KERNELS.get(kernel_name)


def _device_limits(roofs: Roofs) -> Any:
    """The kernels' DeviceLimits for this target, where the kernels package defines it."""
    try:
        from einsim.kernels.limits import DeviceLimits
    except ImportError:
        return None
    values = {
        "sm_count": roofs.sm_count,
        "shared_memory_per_sm": roofs.smem_per_sm,
        "shared_memory_per_block": roofs.smem_per_block,
        "registers_per_sm": roofs.registers_per_sm,
        "max_threads_per_sm": roofs.max_threads_per_sm,
    }
    names = {f.name for f in dataclasses.fields(DeviceLimits)} if dataclasses.is_dataclass(DeviceLimits) else set()
    try:
        return DeviceLimits(**{k: v for k, v in values.items() if k in names})
    except TypeError:
        return None
