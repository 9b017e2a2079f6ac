"""Configs, resource model and HBM traffic of the 2-pass and 3-pass forward kernels.

Plain Python (no torch, no triton): the simulator and the autotuner read the traffic formulas
and the shared-memory model on machines without a GPU stack. docs/kernels.md § Multi-pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from einsim.problem import Problem
from einsim.kernel_rules import padded_head_dim
from einsim.kernels.limits import DeviceLimits, shared_memory_reasons
from einsim.kernels.registry import PassTraffic, TrafficKernelSpec, register

STATS_BYTES = 4  # LM, SLD, GM, SD and lse are fp32 in HBM
TILE_SIZES = (16, 32, 64, 128)


@dataclass(frozen=True)
class MultipassConfig:
    """One launch configuration, shared by every pass of a multi-pass kernel.

    The passes must agree on BLOCK_M and BLOCK_N: pass k reads back the per-tile statistics
    that pass k-1 wrote at tile granularity, and skips the same fully masked tiles. MATERIALIZE
    picks the mapping of the tensors that grow with M and live across passes (the simulator's
    `multipass="materialize"`, else `"recompute"`): written to HBM in fp32 and read back, or
    recomputed from K (and V) in each later pass.
    """

    BLOCK_M: int = 64
    BLOCK_N: int = 64
    num_warps: int = 4
    num_stages: int = 2
    MATERIALIZE: bool = False  # intermediates that grow with M through HBM, else recomputed


def _query_tiles(problem, config: MultipassConfig):
    """(rows, visited keys, visited tiles, lo, hi) of every query tile of one head."""
    for start in range(0, problem.q_len, config.BLOCK_M):
        rows = min(config.BLOCK_M, problem.q_len - start)
        lo, hi = problem.tile_key_range(start, config.BLOCK_M, config.BLOCK_N)
        yield rows, hi - lo, -(-(hi - lo) // config.BLOCK_N), lo, hi


def _union_keys(problem: Problem, config: MultipassConfig) -> int:
    """Distinct keys of one head that any query tile visits (a pass reads at least these)."""
    covered, end = 0, 0
    for _, _, _, lo, hi in sorted(_query_tiles(problem, config), key=lambda t: t[3]):
        if hi <= lo:
            continue
        lo = max(lo, end)
        if hi > lo:
            covered += hi - lo
            end = hi
    return covered


def pass_traffic(problem, config: MultipassConfig, passes: int, *,
                 reuse: bool = True) -> tuple[PassTraffic, ...]:
    """Per-pass HBM traffic of the `passes`-pass kernel (2 or 3) under `config`, by tensor.

    reuse=True (the cascade's traffic, what `hbm_bytes` returns): a pass streams each K/V
    element it needs once per key/value head, i.e. the query tiles and GQA query heads sharing
    it hit in L2. reuse=False: every byte the programs request, K/V again for every query tile
    and query head (an upper bound on DRAM traffic). Q is read by every pass that computes QK.
    Materialized intermediates and the statistics GM, SD, lse are fp32; only visited tiles of
    them are written and read. Measured DRAM bytes lie between the two (docs/performance.md).
    """
    if passes not in (2, 3):
        raise ValueError(f"passes must be 2 or 3, got {passes}")
    s = problem.dtype_bytes
    d, dv = problem.head_dim, problem.v_head_dim
    heads = problem.batch * problem.q_heads
    tiles = list(_query_tiles(problem, config))
    if reuse:
        keys = problem.batch * problem.kv_heads * _union_keys(problem, config)
    else:
        keys = heads * sum(t[1] for t in tiles)
    q_bytes = heads * problem.q_len * d * s
    k_bytes = keys * d * s
    v_bytes = keys * dv * s
    row_stat = heads * problem.q_len * STATS_BYTES
    out_bytes = heads * problem.q_len * dv * s
    # (query row, key tile) pairs visited, and (query row, key) elements of the visited tiles
    row_tiles = heads * sum(rows * n_tiles for rows, _, n_tiles, _, _ in tiles)
    row_keys = heads * sum(rows * n_keys for rows, n_keys, _, _, _ in tiles)
    if passes == 2:
        if config.MATERIALIZE:
            tile_stat = row_tiles * STATS_BYTES
            slnv = row_tiles * dv * STATS_BYTES
            return (
                PassTraffic("pass 1: per key tile LM, SLD, SLNV to HBM; global max GM",
                            reads={"Q": q_bytes, "K": k_bytes, "V": v_bytes},
                            writes={"LM": tile_stat, "SLD": tile_stat, "SLNV": slnv, "GM": row_stat}),
                PassTraffic("pass 2: correct each tile by exp(LM - GM), SD, SNV, AV = SNV / SD",
                            reads={"LM": tile_stat, "SLD": tile_stat, "SLNV": slnv, "GM": row_stat},
                            writes={"O": out_bytes, "lse": row_stat}),
            )
        return (
            PassTraffic("pass 1: QK, LM, global max GM",
                        reads={"Q": q_bytes, "K": k_bytes}, writes={"GM": row_stat}),
            PassTraffic("pass 2: QK, LM, SLN, SLD, SLNV recomputed; correction, SD, SNV, AV",
                        reads={"Q": q_bytes, "K": k_bytes, "V": v_bytes, "GM": row_stat},
                        writes={"O": out_bytes, "lse": row_stat}),
        )
    if config.MATERIALIZE:
        scores = row_keys * STATS_BYTES
        return (
            PassTraffic("pass 1: QK to HBM, row max GM",
                        reads={"Q": q_bytes, "K": k_bytes}, writes={"QK": scores, "GM": row_stat}),
            PassTraffic("pass 2: SN = exp(QK - GM) over QK in HBM, SD",
                        reads={"QK": scores, "GM": row_stat}, writes={"SN": scores, "SD": row_stat}),
            PassTraffic("pass 3: A = SN / SD, AV = A V",
                        reads={"SN": scores, "V": v_bytes, "GM": row_stat, "SD": row_stat},
                        writes={"O": out_bytes, "lse": row_stat}),
        )
    return (
        PassTraffic("pass 1: QK, row max GM",
                    reads={"Q": q_bytes, "K": k_bytes}, writes={"GM": row_stat}),
        PassTraffic("pass 2: QK recomputed, SD = sum exp(QK - GM)",
                    reads={"Q": q_bytes, "K": k_bytes, "GM": row_stat}, writes={"SD": row_stat}),
        PassTraffic("pass 3: QK recomputed, A = exp(QK - GM) / SD, AV = A V",
                    reads={"Q": q_bytes, "K": k_bytes, "V": v_bytes, "GM": row_stat, "SD": row_stat},
                    writes={"O": out_bytes, "lse": row_stat}),
    )


def hbm_bytes(problem, config: MultipassConfig, passes: int) -> int:
    """The cascade's HBM traffic of the kernel, all passes together (pass_traffic, reuse=True)."""
    return sum(p.total for p in pass_traffic(problem, config, passes))


def requested_bytes(problem, config: MultipassConfig, passes: int) -> int:
    """Every byte the programs load or store, with no cache reuse (pass_traffic, reuse=False)."""
    return sum(p.total for p in pass_traffic(problem, config, passes, reuse=False))


def padded_dims(problem) -> tuple[int, int]:
    """Head dims as the kernels tile them (Triton's aranges are powers of two)."""
    return padded_head_dim(problem.head_dim), padded_head_dim(problem.v_head_dim)


def shared_memory_bytes(config: MultipassConfig, problem) -> int:
    """Shared memory one program uses: the Q tile plus a ring of num_stages - 1 K and V tiles
    (Triton's pipeline convention, as the fused forward's model).

    Counts the output pass (K and V); the statistics passes load K only, so this bounds them.
    """
    s = problem.dtype_bytes
    block_d, block_dv = padded_dims(problem)
    ring = max(1, config.num_stages - 1)
    return s * (config.BLOCK_M * block_d + ring * config.BLOCK_N * (block_d + block_dv))


def check_config(config: MultipassConfig, problem: Problem,
                 limits: DeviceLimits | None = None) -> list[str]:
    """Why `config` cannot run `problem` on a device with `limits` (empty when it can)."""
    if not isinstance(config, MultipassConfig):
        return [f"expected a MultipassConfig, got {type(config).__name__}"]
    reasons = []
    for name in ("BLOCK_M", "BLOCK_N"):
        value = getattr(config, name)
        if value not in TILE_SIZES:
            reasons.append(f"{name}={value}: expected one of 16, 32, 64, 128")
    if config.num_warps not in (1, 2, 4, 8, 16):
        reasons.append(f"num_warps={config.num_warps}: expected a power of two from 1 to 16")
    if not 1 <= config.num_stages <= 6:
        reasons.append(f"num_stages={config.num_stages}: expected 1 to 6")
    if not 16 <= problem.head_dim <= 256 or not 16 <= problem.v_head_dim <= 256:
        reasons.append(f"head dims {problem.head_dim}/{problem.v_head_dim}: expected 16 to 256")
    if not reasons:
        reasons += shared_memory_reasons(shared_memory_bytes(config, problem), limits)
    return reasons


def default_config(problem) -> MultipassConfig:
    """A config that runs everywhere and is reasonable on an H100 (tuned numbers override it)."""
    block_d, _ = padded_dims(problem)
    if block_d <= 64:
        return MultipassConfig(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    if block_d <= 128:
        return MultipassConfig(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)
    return MultipassConfig(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=3)


def search_space(problem: Problem, limits: DeviceLimits | None = None) -> list[MultipassConfig]:
    """Every config worth compiling for `problem`, filtered by `check_config`."""
    configs = [
        MultipassConfig(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st, MATERIALIZE=False)
        for bm in (64, 128)
        for bn in (32, 64, 128)
        for w in (4, 8)
        for st in (1, 2, 3, 4)
    ]
    return [c for c in configs if not check_config(c, problem, limits)]


def _traffic_of(passes: int):
    def traffic(problem: Problem, config: MultipassConfig, limits=None):
        return pass_traffic(problem, config, passes)

    def total(problem: Problem, config: MultipassConfig, limits=None) -> int:
        return hbm_bytes(problem, config, passes)

    return traffic, total


for _passes in (2, 3):
    _traffic, _total = _traffic_of(_passes)
    register(TrafficKernelSpec(
        name=f"attention-{_passes}pass-fwd",
        cascade=f"attention-{_passes}pass",
        config_type=MultipassConfig,
        default_config=default_config,
        search_space=search_space,
        check_config=check_config,
        shared_memory_bytes=shared_memory_bytes,
        launcher=f"einsim.kernels.multipass.forward:launch_{_passes}pass",
        description=(
            "2-pass forward: per-key-tile LM, SLD, SLNV and the global max, then the correction "
            "and output; tile intermediates recomputed from K/V or (MATERIALIZE) through HBM"
            if _passes == 2 else
            "3-pass forward: row max, row sum, output; QK recomputed from K in every pass or "
            "(MATERIALIZE) QK/SN through HBM"),
        hbm_bytes=_total,
        pass_traffic=_traffic,
        passes=_passes,
    ))
