"""Configs, search spaces and resource models of the fused forward (`attention-fwd`, the fusemax
cascade) and its backward (`attention-bwd`); registers both. Plain Python: no torch, no triton.

Shared memory is modelled as the tiles Triton's software pipeline keeps resident (docs/kernels.md
§ Resource model); the model is checked against the compiled kernels' metadata on the GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from einsim.kernel_rules import SHARED_MEMORY_OVERHEAD, attention_shared_memory, padded_head_dim
from einsim.kernels.limits import DeviceLimits, shared_memory_reasons
from einsim.kernels.registry import KernelSpec, register
from einsim.problem import Problem

TILE_SIZES = (16, 32, 64, 128, 256)
WARPS = (1, 2, 4, 8, 16)
MAX_STAGES = 6
# Registers: Triton spills above 255 per thread; the fp32 accumulator alone needs
# BLOCK_M * BLOCK_DV / (32 * num_warps) of them, the score tile BLOCK_M * BLOCK_N / (32 * warps).
ACCUMULATOR_REGISTER_BUDGET = 192


@dataclass(frozen=True)
class FlashConfig:
    """One launch of the fused forward: a BLOCK_M query tile per program, BLOCK_N key tiles.

    num_stages is the depth of the K/V shared-memory ring; warp_specialize lets Triton split
    the loop into producer (loads) and consumer (wgmma + softmax) warps on Hopper (ignored by
    the interpreter and by GPUs before sm_90). tma=True loads through tensor descriptors when
    every tensor is 16-byte aligned (else, and with tma=False, masked pointer loads of any strides).
    """

    BLOCK_M: int = 128
    BLOCK_N: int = 64
    num_warps: int = 8
    num_stages: int = 3
    warp_specialize: bool = False
    tma: bool = True  # tensor descriptors when the tensors allow them; masked pointers otherwise
    exp_split: int = 1  # 1/exp_split of the unmasked tiles' exponentials on the FMA units (1, 2, 4)


@dataclass(frozen=True)
class FlashBackwardConfig:
    """One launch of the backward: program per key tile (BLOCK_N keys) computes dK, dV walking
    BLOCK_M query tiles; a second kernel, per query tile (BLOCK_M_DQ rows), computes dQ walking
    BLOCK_N_DQ key tiles. Both recompute P from the saved lse (7 matmuls per tile pair, no
    atomics, deterministic). dq_atomic=True instead reduces dQ = dS·K from the dK/dV kernel into
    an fp32 buffer (TMA reduce-add; 5 matmuls, summation order not fixed; BLOCK_*_DQ unused)."""

    BLOCK_M: int = 64
    BLOCK_N: int = 128
    BLOCK_M_DQ: int = 128
    BLOCK_N_DQ: int = 64
    num_warps: int = 8
    num_stages: int = 2
    tma: bool = True
    dq_atomic: bool = False
    one_launch: bool = False  # dK/dV and dQ programs in one grid (ignored with dq_atomic)


def _common_reasons(config, problem: Problem, tiles: dict[str, int]) -> list[str]:
    reasons = []
    for name, value in tiles.items():
        if value not in TILE_SIZES:
            reasons.append(f"{name}={value}: expected one of {', '.join(map(str, TILE_SIZES))}")
    if config.num_warps not in WARPS:
        reasons.append(f"num_warps={config.num_warps}: expected one of {', '.join(map(str, WARPS))}")
    if not 1 <= config.num_stages <= MAX_STAGES:
        reasons.append(f"num_stages={config.num_stages}: expected 1 to {MAX_STAGES}")
    if not 16 <= problem.head_dim <= 256 or not 16 <= problem.v_head_dim <= 256:
        reasons.append(f"head dims {problem.head_dim}/{problem.v_head_dim}: the kernels take 16 to 256")
    return reasons


# -- forward -----------------------------------------------------------------------------------
def shared_memory_bytes(config: FlashConfig, problem: Problem) -> int:
    """Q tile, plus num_stages K and V tiles in flight (einsim.kernel_rules, which the GPU cost
    model prices with too). Matches the compiled kernels' metadata on an H100 to the byte for
    every config swept (docs/performance.md, v1): e.g. 230400 for 128x128 tiles, D=128, 3 stages."""
    return attention_shared_memory(config.BLOCK_M, config.BLOCK_N, config.num_stages, problem.head_dim,
                                   problem.v_head_dim, problem.dtype_bytes)


def accumulator_registers(config: FlashConfig, problem: Problem) -> float:
    """fp32 registers per thread for the output accumulator and one score tile."""
    threads = 32 * config.num_warps
    dv = padded_head_dim(problem.v_head_dim)
    return config.BLOCK_M * (dv + config.BLOCK_N) / threads


def check_config(config: FlashConfig, problem: Problem,
                 limits: DeviceLimits | None = None) -> list[str]:
    """Why `config` cannot run `problem` (empty list: it can)."""
    if not isinstance(config, FlashConfig):
        return [f"expected a FlashConfig, got {type(config).__name__}"]
    reasons = _common_reasons(config, problem, {"BLOCK_M": config.BLOCK_M, "BLOCK_N": config.BLOCK_N})
    if reasons:
        return reasons
    if config.BLOCK_M > 256 or config.BLOCK_N > 256:
        reasons.append("tiles above 256 rows do not fit the register file")
    if config.BLOCK_M < 16 * (config.num_warps // 4 or 1) and config.num_warps > 4:
        reasons.append(f"BLOCK_M={config.BLOCK_M} is too small for {config.num_warps} warps "
                       "(each warpgroup needs 16 rows or more per wgmma)")
    if config.exp_split not in (1, 2, 4) or config.BLOCK_N < 4 * config.exp_split:
        reasons.append(f"exp_split={config.exp_split}: expected 1, 2 or 4 (and BLOCK_N >= "
                       "4 x exp_split)")
    if config.warp_specialize and config.num_warps < 8:
        # Triton 3.6 fails to compile the warp-specialised loop with 4 warps (PassManager error in
        # NVGPUWarpSpecialization, seen on an H100); the interpreter would accept it.
        reasons.append("warp_specialize needs num_warps=8 with Triton 3.6")
    registers = accumulator_registers(config, problem)
    if registers > ACCUMULATOR_REGISTER_BUDGET:
        reasons.append(f"accumulator and scores need {registers:.0f} fp32 registers per thread "
                       f"(> {ACCUMULATOR_REGISTER_BUDGET}): more warps or smaller tiles")
    reasons += shared_memory_reasons(shared_memory_bytes(config, problem), limits, "Q and the K/V ring")
    return reasons


def default_config(problem: Problem) -> FlashConfig:
    """Best of the H100 sweeps at N=16k (docs/performance.md); runs on every problem."""
    d = padded_head_dim(max(problem.head_dim, problem.v_head_dim))
    if d <= 32:
        return FlashConfig(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    if d <= 64:
        if problem.causal:
            return FlashConfig(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3)
        return FlashConfig(BLOCK_M=128, BLOCK_N=128, num_warps=4, num_stages=3)
    if d <= 128:
        return FlashConfig(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3)
    return FlashConfig(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)


def search_space(problem: Problem, limits: DeviceLimits | None = None) -> list[FlashConfig]:
    """Every config worth compiling for `problem`, filtered by check_config."""
    configs = [
        FlashConfig(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=st, warp_specialize=ws)
        for bm in (64, 128, 256)
        for bn in (32, 64, 128)
        for w in (4, 8)
        for st in (2, 3, 4)
        for ws in (False, True)
    ]
    return [c for c in configs if not check_config(c, problem, limits)]


# -- backward ----------------------------------------------------------------------------------
def backward_shared_memory_bytes(config: FlashBackwardConfig, problem: Problem) -> int:
    """The larger of the two kernels: dK/dV keeps K, V resident and rings Q, dO (+ lse, delta);
    dQ keeps Q, dO resident and rings K, V."""
    s = problem.dtype_bytes
    d, dv = padded_head_dim(problem.head_dim), padded_head_dim(problem.v_head_dim)
    stages = max(1, config.num_stages)
    dkdv = s * (config.BLOCK_N * (d + dv) + stages * config.BLOCK_M * (d + dv))
    if config.dq_atomic:
        # + the fp32 dQ tile staged for the TMA reduce and dSᵀ staged for its transposed matmul
        return (dkdv + 4 * config.BLOCK_M * d + s * config.BLOCK_M * config.BLOCK_N
                + SHARED_MEMORY_OVERHEAD)
    dq = s * (config.BLOCK_M_DQ * (d + dv) + stages * config.BLOCK_N_DQ * (d + dv))
    return max(dkdv, dq) + SHARED_MEMORY_OVERHEAD


def backward_check_config(config: FlashBackwardConfig, problem: Problem,
                          limits: DeviceLimits | None = None) -> list[str]:
    if not isinstance(config, FlashBackwardConfig):
        return [f"expected a FlashBackwardConfig, got {type(config).__name__}"]
    reasons = _common_reasons(config, problem, {
        "BLOCK_M": config.BLOCK_M, "BLOCK_N": config.BLOCK_N,
        "BLOCK_M_DQ": config.BLOCK_M_DQ, "BLOCK_N_DQ": config.BLOCK_N_DQ})
    if reasons:
        return reasons
    threads = 32 * config.num_warps
    dv = padded_head_dim(problem.v_head_dim)
    d = padded_head_dim(problem.head_dim)
    # dK and dV accumulators plus the transposed score tile, fp32, per thread.
    dkdv_registers = config.BLOCK_N * (d + dv + config.BLOCK_M) / threads
    dq_registers = config.BLOCK_M_DQ * (d + config.BLOCK_N_DQ) / threads
    for what, registers in (("dK/dV", dkdv_registers), ("dQ", dq_registers)):
        if registers > ACCUMULATOR_REGISTER_BUDGET:
            reasons.append(f"{what} accumulators need {registers:.0f} fp32 registers per thread "
                           f"(> {ACCUMULATOR_REGISTER_BUDGET}): more warps or smaller tiles")
    reasons += shared_memory_reasons(backward_shared_memory_bytes(config, problem), limits, "the backward's tiles")
    return reasons


def backward_default_config(problem: Problem) -> FlashBackwardConfig:
    d = padded_head_dim(max(problem.head_dim, problem.v_head_dim))
    if d <= 64:
        return FlashBackwardConfig(BLOCK_M=64, BLOCK_N=64, BLOCK_M_DQ=64, BLOCK_N_DQ=64,
                                   num_warps=4, num_stages=2)
    if d <= 128:
        return FlashBackwardConfig(BLOCK_M=64, BLOCK_N=128, BLOCK_M_DQ=128, BLOCK_N_DQ=64,
                                   num_warps=8, num_stages=3)
    return FlashBackwardConfig(BLOCK_M=32, BLOCK_N=64, BLOCK_M_DQ=64, BLOCK_N_DQ=32,
                               num_warps=8, num_stages=1)


# Below this much backward work (about 20 us of tensor-core time on an H100/H200) the host sets
# the pace of a backward call, and each launch costs host time: the fused backward's default
# runs its dK/dV and dQ programs in one grid (one_launch), one launch fewer per call.
HOST_BOUND_FLOPS = 1e10


def fused_backward_default_config(problem: Problem) -> FlashBackwardConfig:
    """`attention-bwd`'s default: backward_default_config, in one launch when the problem is
    host-bound (HOST_BOUND_FLOPS). The compiled cascades' backward, which has no one-launch
    grid, keeps backward_default_config."""
    config = backward_default_config(problem)
    if problem.backward_flops() < HOST_BOUND_FLOPS:
        config = dataclasses.replace(config, one_launch=True)
    return config


def backward_search_space(problem: Problem,
                          limits: DeviceLimits | None = None) -> list[FlashBackwardConfig]:
    configs = [
        FlashBackwardConfig(BLOCK_M=bm, BLOCK_N=bn, BLOCK_M_DQ=bmq, BLOCK_N_DQ=bnq,
                            num_warps=w, num_stages=st)
        for bm in (32, 64)
        for bn in (64, 128)
        for bmq, bnq in ((64, 64), (128, 64), (128, 32))
        for w in (4, 8)
        for st in (1, 2, 3)
    ]
    return [c for c in configs if not backward_check_config(c, problem, limits)]


def backward_flops(problem: Problem) -> float:
    return problem.backward_flops()


def backward_min_bytes(problem: Problem) -> int:
    return problem.backward_min_bytes()


def _backward_inputs(problem, dtype=None, device="cuda", seed=0):
    from einsim.kernels.registry import make_attention_inputs

    return make_attention_inputs(problem, dtype, device, seed, requires_grad=True)


FORWARD = register(KernelSpec(
    name="attention-fwd",
    cascade="fusemax",
    config_type=FlashConfig,
    default_config=default_config,
    search_space=search_space,
    check_config=check_config,
    shared_memory_bytes=shared_memory_bytes,
    launcher="einsim.kernels.flash.forward:launch_from_inputs",
    description="fused 1-pass forward: online softmax with deferred normalisation, returns lse",
))

BACKWARD = register(KernelSpec(
    name="attention-bwd",
    cascade="fusemax",
    config_type=FlashBackwardConfig,
    default_config=fused_backward_default_config,
    search_space=backward_search_space,
    check_config=backward_check_config,
    shared_memory_bytes=backward_shared_memory_bytes,
    launcher="einsim.kernels.flash.backward:launch_from_inputs",
    flops=backward_flops,
    min_bytes=backward_min_bytes,
    make_inputs=_backward_inputs,
    description="backward of the fused forward: dK/dV per key tile (P recomputed from the "
                "saved lse); dQ by a second kernel or (dq_atomic) by TMA reduce-add",
    direction="backward",
))
