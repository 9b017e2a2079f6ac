"""Config, split-count choice, resource model and HBM traffic of the split-KV decode kernel.

Plain Python (no torch, no triton). docs/kernels.md § Decode.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from einsim.problem import Problem
from einsim.kernel_rules import next_power_of_two, padded_head_dim
from einsim.kernels.limits import DeviceLimits, shared_memory_reasons
from einsim.kernels.registry import KernelSpec, PassTraffic, TrafficKernelSpec, register

STATS_BYTES = 4  # partial max, sum and numerator are fp32 in HBM
MIN_TILES_PER_SPLIT = 4  # below this a split spends more on its prologue and partials than on keys
MAX_SPLITS = 256
WAVE_TOLERANCE = 0.95  # take the fewest splits within this fraction of the best wave efficiency

@dataclass(frozen=True)
class DecodeConfig:
    """One launch configuration of the decode kernel.

    BLOCK_M rows of a tile are the packed (query head of one KV group, query position) pairs;
    NUM_SPLITS chunks of the KV sequence are reduced in parallel (None: chosen by wave
    efficiency over the device's SMs, `choose_num_splits`). USE_TMA loads K/V tiles with
    tensor descriptors (sm_90+, K/V rows 16-byte aligned) instead of pointer arithmetic.
    """

    BLOCK_M: int = 16
    BLOCK_N: int = 64
    num_warps: int = 4
    num_stages: int = 3
    NUM_SPLITS: int | None = None
    USE_TMA: bool = False  # K/V tiles through tensor descriptors (Hopper's copy engine)


@dataclass(frozen=True)
class SplitPlan:
    num_splits: int
    split_len: int  # keys per split, a multiple of BLOCK_N
    kv_lo: int  # first key any query row sees
    kv_hi: int  # one past the last


def packed_rows(problem) -> int:
    """Rows of the packed tile: the query heads sharing one KV head times the query positions."""
    return (problem.q_heads // problem.kv_heads) * problem.q_len


def row_tiles(problem: Problem, config: DecodeConfig) -> int:
    return -(-packed_rows(problem) // config.BLOCK_M)


def key_range(problem) -> tuple[int, int]:
    """Keys [lo, hi) that at least one query row sees (bottom-right aligned masks).

    The last query row sits at the end of the cache, so hi is always kv_len; a window's left
    edge, seen from the first row, is the lowest key anyone needs.
    """
    lo = 0
    if problem.window is not None:
        lo = max(0, problem.kv_len - problem.q_len - problem.window[0])
    return lo, problem.kv_len


def padded_dims(problem) -> tuple[int, int]:
    return padded_head_dim(problem.head_dim), padded_head_dim(problem.v_head_dim)


def shared_memory_bytes(config: DecodeConfig, problem) -> int:
    """The Q tile, a ring of num_stages - 1 K and V tiles (Triton's software pipeline keeps one
    stage in flight in registers) and the probabilities staged for the second matmul; matches
    the compiled kernel's metadata on sm_90 (71680 bytes at BLOCK_N=64, D=128, 3 stages)."""
    s = problem.dtype_bytes
    block_d, block_dv = padded_dims(problem)
    ring = max(1, config.num_stages - 1)
    return s * (config.BLOCK_M * block_d + ring * config.BLOCK_N * (block_d + block_dv)
                + config.BLOCK_M * config.BLOCK_N)


def programs_per_sm(config: DecodeConfig, problem: Problem,
                    limits: DeviceLimits | None = None) -> int:
    """Resident programs per SM, limited by shared memory, threads and (assumed) registers."""
    limits = limits or DeviceLimits.h100()
    threads = config.num_warps * 32
    # Triton reserves about 1 KiB per program besides the tiles.
    by_smem = limits.shared_memory_per_sm // max(1, shared_memory_bytes(config, problem) + 1024)
    by_threads = limits.max_threads_per_sm // threads
    by_registers = limits.registers_per_sm // (threads * 128)  # assume 128 registers a thread
    return max(1, min(by_smem, by_threads, by_registers, 32))


def wave_efficiency(programs: int, slots: int) -> float:
    """Fraction of the program slots busy, averaged over the waves the grid needs."""
    return programs / (math.ceil(programs / slots) * slots)


def _plan(problem: Problem, config: DecodeConfig, splits: int) -> SplitPlan:
    lo, hi = key_range(problem)
    keys = max(1, hi - lo)
    split_len = -(-(-(-keys // splits)) // config.BLOCK_N) * config.BLOCK_N
    return SplitPlan(num_splits=-(-keys // split_len), split_len=split_len, kv_lo=lo, kv_hi=hi)


def choose_num_splits(problem: Problem, config: DecodeConfig,
                      limits: DeviceLimits | None = None) -> int:
    """The fewest splits whose wave efficiency is within WAVE_TOLERANCE of the best.

    Programs = batch · KV heads · row tiles · splits; slots = SMs · programs_per_sm. Each split
    keeps at least MIN_TILES_PER_SPLIT key tiles, so short caches are not split at all.
    """
    lo, hi = key_range(problem)
    tiles = -(-max(1, hi - lo) // config.BLOCK_N)
    base = problem.batch * problem.kv_heads * row_tiles(problem, config)
    slots = (limits or DeviceLimits.h100()).sm_count * programs_per_sm(config, problem, limits)
    most = max(1, min(MAX_SPLITS, tiles // MIN_TILES_PER_SPLIT))
    efficiency = {}
    for splits in range(1, most + 1):
        actual = _plan(problem, config, splits).num_splits
        efficiency.setdefault(actual, wave_efficiency(base * actual, slots))
    best = max(efficiency.values())
    return min(s for s, e in efficiency.items() if e >= WAVE_TOLERANCE * best)


@functools.lru_cache(maxsize=4096)
def split_plan(problem: Problem, config: DecodeConfig,
               limits: DeviceLimits | None = None) -> SplitPlan:
    """How the visible keys are cut into splits (cached: decode steps repeat the same shapes)."""
    splits = config.NUM_SPLITS or choose_num_splits(problem, config, limits)
    return _plan(problem, config, splits)


def pass_traffic(problem: Problem, config: DecodeConfig,
                 limits: DeviceLimits | None = None) -> tuple[PassTraffic, PassTraffic]:
    """HBM bytes of the split pass and of the merge, by tensor (the decode-splitkv cascade).

    The split pass reads Q once and every visible key/value once per row tile (once when the
    packed rows fit one tile, the usual case), and writes per split and row the partial max,
    sum (fp32) and numerator (fp32, Dv wide); the merge reads those back and writes O and lse.
    """
    s = problem.dtype_bytes
    d, dv = problem.head_dim, problem.v_head_dim
    plan = split_plan(problem, config, limits)
    keys = plan.kv_hi - plan.kv_lo
    kv_groups = problem.batch * problem.kv_heads
    rows = packed_rows(problem)
    reread = row_tiles(problem, config)
    partial_rows = kv_groups * plan.num_splits * rows
    q_rows = problem.batch * problem.q_heads * problem.q_len
    return (
        PassTraffic("split: partial (max, sum, numerator) of each KV chunk",
                    reads={"Q": q_rows * d * s, "K": reread * kv_groups * keys * d * s,
                           "V": reread * kv_groups * keys * dv * s},
                    writes={"partial max": partial_rows * STATS_BYTES,
                            "partial sum": partial_rows * STATS_BYTES,
                            "partial numerator": partial_rows * dv * STATS_BYTES}),
        PassTraffic("merge: rescale to the global max, sum, divide",
                    reads={"partial max": partial_rows * STATS_BYTES,
                           "partial sum": partial_rows * STATS_BYTES,
                           "partial numerator": partial_rows * dv * STATS_BYTES},
                    writes={"O": q_rows * dv * s, "lse": q_rows * STATS_BYTES}),
    )


def hbm_bytes(problem: Problem, config: DecodeConfig,
              limits: DeviceLimits | None = None) -> int:
    """All bytes of the split pass and the merge (pass_traffic)."""
    return sum(p.total for p in pass_traffic(problem, config, limits))


def min_bytes(problem: Problem) -> int:
    """Compulsory traffic: read Q and the visible K/V once, write O and lse (peers' TB/s count
    the same bytes, less the lse)."""
    return problem.forward_min_bytes()


def default_config(problem: Problem) -> DecodeConfig:
    """Packs the whole GQA group when it has at most 64 rows. BLOCK_N = 128 won the H100 sweep
    at D = 128 (docs/performance.md § Decode, within 1 % of cuDNN at every KV length); D = 256
    halves it to stay at two pipeline stages in shared memory (not measured)."""
    rows = packed_rows(problem)
    block_m = min(64, max(16, next_power_of_two(rows)))
    block_d, _ = padded_dims(problem)
    block_n = 128 if block_d <= 128 else 64
    return DecodeConfig(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4, num_stages=3)


def check_config(config: DecodeConfig, problem: Problem,
                 limits: DeviceLimits | None = None) -> list[str]:
    """Why `config` cannot run `problem` (empty list: it can)."""
    if not isinstance(config, DecodeConfig):
        return [f"expected a DecodeConfig, got {type(config).__name__}"]
    reasons = []
    if config.BLOCK_M not in (16, 32, 64, 128):
        reasons.append(f"BLOCK_M={config.BLOCK_M}: expected 16, 32, 64 or 128")
    if config.BLOCK_N not in (16, 32, 64, 128, 256):
        reasons.append(f"BLOCK_N={config.BLOCK_N}: expected a power of two from 16 to 256")
    if config.num_warps not in (1, 2, 4, 8, 16):
        reasons.append(f"num_warps={config.num_warps}: expected a power of two from 1 to 16")
    if not 1 <= config.num_stages <= 8:
        reasons.append(f"num_stages={config.num_stages}: expected 1 to 8")
    if config.NUM_SPLITS is not None and not 1 <= config.NUM_SPLITS <= 4096:
        reasons.append(f"NUM_SPLITS={config.NUM_SPLITS}: expected None (automatic) or 1 to 4096")
    if config.USE_TMA:
        capability = (limits or DeviceLimits.h100()).compute_capability
        if tuple(capability) < (9, 0):
            reasons.append(f"USE_TMA needs tensor descriptors (sm_90 or newer), the device is "
                           f"sm_{capability[0]}{capability[1]}")
        if (problem.head_dim * problem.dtype_bytes) % 16 or (problem.v_head_dim * problem.dtype_bytes) % 16:
            reasons.append(f"USE_TMA needs 16-byte aligned K/V rows, head dims "
                           f"{problem.head_dim}/{problem.v_head_dim} are not")
    if problem.q_len > 128:
        reasons.append(f"q_len={problem.q_len}: the decode kernel takes at most 128 query rows; "
                       "use attention-fwd")
    if not 16 <= problem.head_dim <= 256 or not 16 <= problem.v_head_dim <= 256:
        reasons.append(f"head dims {problem.head_dim}/{problem.v_head_dim}: expected 16 to 256")
    if not reasons:
        reasons += shared_memory_reasons(shared_memory_bytes(config, problem), limits)
    return reasons


def search_space(problem: Problem, limits: DeviceLimits | None = None) -> list[DecodeConfig]:
    block_m = default_config(problem).BLOCK_M
    configs = [
        DecodeConfig(BLOCK_M=block_m, BLOCK_N=bn, num_warps=w, num_stages=st, NUM_SPLITS=None)
        for bn in (32, 64, 128, 256)
        for w in (2, 4, 8)
        for st in (2, 3, 4, 5)
    ]
    return [c for c in configs if not check_config(c, problem, limits)]


DECODE = register(TrafficKernelSpec(
    name="decode",
    cascade="decode-splitkv",
    config_type=DecodeConfig,
    default_config=default_config,
    search_space=search_space,
    check_config=check_config,
    shared_memory_bytes=shared_memory_bytes,
    launcher="einsim.kernels.decode.forward:launch",
    min_bytes=min_bytes,
    description="split-KV decode (flash-decoding): GQA group packed in one tile, KV chunks "
                "reduced in parallel to partial (max, sum, numerator) in HBM, then merged",
    hbm_bytes=hbm_bytes,
    pass_traffic=pass_traffic,
    passes=1,
))


# -- serving decode: per-sequence lengths, paged cache, stream-K split (kernels/decode/paged.py) --
DEFAULT_PAGE_SIZE = 16  # what make_paged_inputs pages a cache into (vLLM's default block size)


@dataclass(frozen=True)
class PagedDecodeConfig:
    """One launch of the serving decode kernel. BLOCK_N keys per tile (a tile may span pages:
    each key finds its page in the block table); PROGRAMS: the split pass's fixed grid (None:
    the device's SMs times the programs one SM holds, `paged_programs`). The packed row tile
    (GQA group x query tokens) is sized from the problem, as in `decode`."""

    BLOCK_N: int = 128
    num_warps: int = 4
    num_stages: int = 3
    PROGRAMS: int | None = None
    # Look each key's page up in the block table, even for power-of-two pages whose tiles could
    # take whole pages at a time (a measurement knob: which is faster is the GPU's call).
    PER_KEY_PAGES: bool = False


def paged_block_m(problem: Problem) -> int:
    return min(64, max(16, next_power_of_two(packed_rows(problem))))


def paged_shared_memory_bytes(config: PagedDecodeConfig, problem: Problem) -> int:
    as_decode = DecodeConfig(BLOCK_M=paged_block_m(problem), BLOCK_N=config.BLOCK_N,
                             num_warps=config.num_warps, num_stages=config.num_stages)
    return shared_memory_bytes(as_decode, problem)


def paged_programs(problem: Problem, config: PagedDecodeConfig,
                   limits: DeviceLimits | None = None) -> int:
    """The split pass's grid: config.PROGRAMS, else SMs x resident programs per SM (so one
    wave covers the device and every program gets an equal share of the key tiles)."""
    if config.PROGRAMS:
        return config.PROGRAMS
    as_decode = DecodeConfig(BLOCK_M=paged_block_m(problem), BLOCK_N=config.BLOCK_N,
                             num_warps=config.num_warps, num_stages=config.num_stages)
    limits = limits or DeviceLimits.h100()
    return limits.sm_count * programs_per_sm(as_decode, problem, limits)


def paged_default_config(problem: Problem) -> PagedDecodeConfig:
    """The dense decode's H100 winner (BLOCK_N = 128, 4 warps, 3 stages; 64 at D = 256)."""
    return PagedDecodeConfig(BLOCK_N=128 if padded_head_dim(problem.head_dim) <= 128 else 64,
                             num_warps=4, num_stages=3)


def paged_check_config(config: PagedDecodeConfig, problem: Problem,
                       limits: DeviceLimits | None = None) -> list[str]:
    if not isinstance(config, PagedDecodeConfig):
        return [f"expected a PagedDecodeConfig, got {type(config).__name__}"]
    reasons = []
    if config.BLOCK_N not in (16, 32, 64, 128):
        reasons.append(f"BLOCK_N={config.BLOCK_N}: expected 16, 32, 64 or 128")
    if config.num_warps not in (1, 2, 4, 8):
        reasons.append(f"num_warps={config.num_warps}: expected 1, 2, 4 or 8")
    if not 1 <= config.num_stages <= 6:
        reasons.append(f"num_stages={config.num_stages}: expected 1 to 6")
    if config.PROGRAMS is not None and not 1 <= config.PROGRAMS <= 65536:
        reasons.append(f"PROGRAMS={config.PROGRAMS}: expected None (automatic) or 1 to 65536")
    if problem.q_len > 64:
        reasons.append(f"q_len={problem.q_len}: serving decode takes at most 64 query tokens per "
                       "sequence; use attention-fwd")
    if problem.window is not None:
        reasons.append("window: serving decode has no sliding window (use decode)")
    if not 16 <= problem.head_dim <= 256 or not 16 <= problem.v_head_dim <= 256:
        reasons.append(f"head dims {problem.head_dim}/{problem.v_head_dim}: expected 16 to 256")
    if not reasons:
        reasons += shared_memory_reasons(paged_shared_memory_bytes(config, problem), limits)
    return reasons


def paged_search_space(problem: Problem, limits: DeviceLimits | None = None) -> list[PagedDecodeConfig]:
    configs = [PagedDecodeConfig(BLOCK_N=bn, num_warps=w, num_stages=st)
               for bn in (32, 64, 128) for w in (2, 4, 8) for st in (2, 3, 4)]
    return [c for c in configs if not paged_check_config(c, problem, limits)]


def make_paged_inputs(problem: Problem, dtype: str | None = None, device: str = "cuda",
                      seed: int = 0, *, page_size: int = DEFAULT_PAGE_SIZE, cache_seqlens=None,
                      dense: dict | None = None):
    """Random q and a paged KV cache for `problem` (every sequence kv_len long unless
    `cache_seqlens` says otherwise), pages of one sequence scattered over the pool (a shuffled
    block table, as a serving engine's allocator leaves them). Also returns dense per-sequence
    k/v views for references: {"q", "k_cache", "v_cache", "block_table", "cache_seqlens",
    "causal", "scale"}. `dense`: q, k, v made elsewhere (e.g. drawn on the GPU). Imports torch."""
    import torch

    from einsim.kernels.registry import make_attention_inputs

    dense = dense or make_attention_inputs(problem, dtype, device, seed)
    if cache_seqlens is None:
        cache_seqlens = problem.kv_lens or [problem.kv_len] * problem.batch
    lengths = list(cache_seqlens)
    pages_per_seq = -(-problem.kv_len // page_size)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    order = torch.randperm(problem.batch * pages_per_seq, generator=generator)
    table = order.view(problem.batch, pages_per_seq).to(device=device, dtype=torch.int32)
    pool_shape = (problem.batch * pages_per_seq, page_size, problem.kv_heads)
    k_cache = dense["k"].new_zeros(*pool_shape, problem.head_dim)
    v_cache = dense["v"].new_zeros(*pool_shape, problem.v_head_dim)
    padded = pages_per_seq * page_size
    for name, cache in (("k", k_cache), ("v", v_cache)):
        tensor = dense[name]  # [B, Hkv, N, D] -> pages [B, pages, page_size, Hkv, D]
        full = tensor.new_zeros(problem.batch, problem.kv_heads, padded, tensor.shape[-1])
        full[:, :, :problem.kv_len] = tensor
        pages = full.view(problem.batch, problem.kv_heads, pages_per_seq, page_size, -1)
        cache[table.long()] = pages.permute(0, 2, 3, 1, 4)
    return {"q": dense["q"], "k": dense["k"], "v": dense["v"], "k_cache": k_cache,
            "v_cache": v_cache, "block_table": table,
            "cache_seqlens": torch.tensor(lengths, dtype=torch.int32, device=device),
            "causal": problem.causal, "scale": None}


def paged_reference(inputs: dict):
    """(out, lse) the serving decode must return: the torch twin of the float64 oracle over each
    sequence's own keys (zeros and -inf for an empty cache). Imports torch."""
    import torch

    from einsim.einsum_cascades.reference import attention_reference_torch

    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    out = torch.zeros(*q.shape[:3], v.shape[-1], dtype=torch.float32, device=q.device)
    lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
    for b, length in enumerate(inputs["cache_seqlens"].tolist()):
        if length > 0:
            out[b:b + 1], lse[b:b + 1] = attention_reference_torch(
                q[b:b + 1], k[b:b + 1, :, :length], v[b:b + 1, :, :length],
                causal=inputs.get("causal", False), scale=inputs.get("scale"), dtype=torch.float32)
    return out, lse


DECODE_PAGED = register(KernelSpec(
    name="decode-paged",
    cascade="decode-splitkv",
    config_type=PagedDecodeConfig,
    default_config=paged_default_config,
    search_space=paged_search_space,
    check_config=paged_check_config,
    shared_memory_bytes=paged_shared_memory_bytes,
    launcher="einsim.kernels.decode.forward:launch_paged",
    min_bytes=min_bytes,
    make_inputs=make_paged_inputs,
    reference=paged_reference,
    per_sequence_lengths=True,
    description="serving decode: per-sequence cache lengths, paged KV cache (block table), GQA, "
                "several query tokens; stream-K split balanced over unequal lengths, then merged",
))


def stream_k_pieces(lengths, kv_segments: int, block_n: int, programs: int,
                    min_tiles: int = MIN_TILES_PER_SPLIT) -> list[list[tuple[int, int, int]]]:
    """The Python twin of the serving kernel's schedule (paged.py `_schedule`): for each program,
    its pieces as (segment, first tile, tiles). Segments are (sequence, KV head, row tile) in
    order; `lengths` the per-sequence cache lengths. Every program gets ceil(T / P') tiles or
    fewer (T the total, P' <= programs the programs with work): balanced however unequal."""
    tiles = [-(-max(0, n) // block_n) for n in lengths]
    total = sum(t * kv_segments for t in tiles)
    active = min(programs, max(1, -(-total // min_tiles)))
    chunk = max(1, -(-total // active))
    starts, unit = [], 0
    for b, t in enumerate(tiles):
        for seg in range(kv_segments):
            starts.append((b * kv_segments + seg, unit, t))
            unit += t
    result = []
    for p in range(programs):
        lo, hi = p * chunk, min((p + 1) * chunk, total) if p < active else p * chunk
        pieces = []
        for segment, first, t in starts:
            a, z = max(lo, first), min(hi, first + t)
            if a < z:
                pieces.append((segment, a - first, z - a))
        result.append(pieces)
    return result
