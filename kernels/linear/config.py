"""Configs, search spaces, resource models and work counts of the chunked linear-attention kernels
(`linear-fwd`, `linear-bwd`) and the decode step (`linear-decode`); registers all three.
Plain Python: no torch, no triton. docs/kernels.md § Linear attention.

The kernels walk the sequence in chunks of CHUNK tokens carrying a running state [D, BLOCK_C]
per (query head, column block); SEGMENT cuts the sequence into independent walks whose starting
states a short scan over segments supplies (0: one walk over the whole sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

from einsim.kernel_rules import (LINEAR_BACKWARD_STAGES, LINEAR_CHUNK, LINEAR_STAGES, LINEAR_STATE_BYTES, LINEAR_STATE_COLUMNS, LINEAR_WARPS,
                                 SHARED_MEMORY_OVERHEAD, linear_default_segment, linear_walk_shared_memory,
                                 padded_head_dim)
from einsim.kernels.limits import DeviceLimits, shared_memory_reasons
from einsim.kernels.registry import KernelSpec, register
from einsim.problem import Problem

CHUNKS = (16, 32, 64, 128)
BLOCKS = (16, 32, 64, 128)
WARPS = (1, 2, 4, 8, 16)
MAX_STAGES = 4
# fp32 registers per thread a walk may hold in its state, output accumulator and score tile
# before Triton spills (255 per thread, minus addresses and loop state).
REGISTER_BUDGET = 192


@dataclass(frozen=True)
class LinearConfig:
    """One chunked walk (the forward): a program per (batch, query head, BLOCK_C output columns,
    segment) walks its segment in chunks of CHUNK tokens. SEGMENT = 0 walks the whole sequence;
    otherwise SEGMENT tokens (a multiple of CHUNK) per walk, after a parallel pass that sums
    each segment's state and a scan that gives every segment its starting state."""

    CHUNK: int = 64
    BLOCK_C: int = 64
    SEGMENT: int = 0
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class LinearBackwardConfig:
    """The backward: three walks (dQ forward in time; dK and dV backward in time, carrying the
    state's gradient) with the forward's tiling knobs. store_states=True takes the forward's
    segment-start states (kept by the autograd Function, fp32) instead of recomputing them; the
    dQ walk then uses the forward's segments."""

    CHUNK: int = 64
    BLOCK_C: int = 64
    SEGMENT: int = 0
    num_warps: int = 4
    num_stages: int = 2
    store_states: bool = True


@dataclass(frozen=True)
class LinearDecodeConfig:
    """One token against the state: a program per (batch, query head, BLOCK_C state columns)
    reads its [D, BLOCK_C] slice of the fp32 state, decays it, adds k^T v, writes it back and
    returns q times it."""

    BLOCK_C: int = 64
    num_warps: int = 4


# -- counts --------------------------------------------------------------------------------------
def chunk_count(length: int, chunk: int) -> int:
    return -(-length // chunk)


def walk_flops(problem: Problem, chunk: int, a_dim: int, c_dim: int) -> float:
    """Matmul FLOPs of one chunked walk as the kernel runs it, for all query heads: per chunk of
    C tokens A·Bᵀ (C x C x D), the masked scores times C (C x C x Dc), A times the state
    (C x D x Dc) and the state update Bᵀ·C (D x C x Dc); padded tail chunks counted whole."""
    tokens = chunk_count(problem.q_len, chunk) * chunk
    per_token = 2 * chunk * (a_dim + c_dim) + 4 * a_dim * c_dim
    return float(problem.batch * problem.q_heads * tokens * per_token)


def forward_flops(problem: Problem, chunk: int = 64) -> float:
    return walk_flops(problem, chunk, problem.head_dim, problem.v_head_dim)


def backward_flops(problem: Problem, chunk: int = 64) -> float:
    """dQ (A = dO over Dv, C = K), dV (A = K over D, C = dO) and dK (A = V over Dv, C = Q)."""
    d, dv = problem.head_dim, problem.v_head_dim
    return walk_flops(problem, chunk, dv, d) + walk_flops(problem, chunk, d, dv) + walk_flops(problem, chunk, dv, d)


def forward_min_bytes(problem: Problem) -> int:
    """Compulsory HBM traffic of the forward: read Q, K, V once, write O."""
    s = problem.dtype_bytes
    q = problem.batch * problem.q_heads * problem.q_len
    kv = problem.batch * problem.kv_heads * problem.kv_len
    return s * (q * (problem.head_dim + problem.v_head_dim) + kv * (problem.head_dim + problem.v_head_dim))


def backward_min_bytes(problem: Problem) -> int:
    """Read Q, K, V, dO; write dQ, dK, dV (no saved statistics: linear attention has none)."""
    s = problem.dtype_bytes
    q = problem.batch * problem.q_heads * problem.q_len
    kv = problem.batch * problem.kv_heads * problem.kv_len
    d, dv = problem.head_dim, problem.v_head_dim
    return s * (2 * q * (d + dv) + 2 * kv * (d + dv))


def state_bytes(problem: Problem) -> int:
    """One fp32 state [D, Dv] per (batch, query head): what decode reads and writes per token."""
    return LINEAR_STATE_BYTES * problem.batch * problem.q_heads * problem.head_dim * problem.v_head_dim


def decode_flops(problem: Problem) -> float:
    return float(4 * problem.batch * problem.q_heads * problem.head_dim * problem.v_head_dim)


def decode_min_bytes(problem: Problem) -> int:
    """The state read and written once, plus the token's q, k, v and the output."""
    s = problem.dtype_bytes
    tokens = problem.batch * (problem.q_heads * (problem.head_dim + problem.v_head_dim)
                              + problem.kv_heads * (problem.head_dim + problem.v_head_dim))
    return 2 * state_bytes(problem) + s * tokens


# -- resource model --------------------------------------------------------------------------------
def _walk_shared_memory(config, problem: Problem, a_dim: int, c_dim: int) -> int:
    """einsim.kernel_rules.linear_walk_shared_memory (the decay variant takes a little less)."""
    return linear_walk_shared_memory(config.CHUNK, config.BLOCK_C, config.num_stages, a_dim, c_dim,
                                     problem.dtype_bytes)


def walk_registers(config, a_dim: int, c_dim: int) -> float:
    """fp32 registers per thread for the state (D x BLOCK_C), the output (C x BLOCK_C) and the
    score tile (C x C)."""
    d = padded_head_dim(a_dim)
    block_c = min(config.BLOCK_C, padded_head_dim(c_dim))
    return (d * block_c + config.CHUNK * block_c + config.CHUNK * config.CHUNK) / (32 * config.num_warps)


def shared_memory_bytes(config: LinearConfig, problem: Problem) -> int:
    return _walk_shared_memory(config, problem, problem.head_dim, problem.v_head_dim)


def backward_shared_memory_bytes(config: LinearBackwardConfig, problem: Problem) -> int:
    d, dv = problem.head_dim, problem.v_head_dim
    return max(_walk_shared_memory(config, problem, dv, d), _walk_shared_memory(config, problem, d, dv))


def _walk_reasons(config, problem: Problem, walks: tuple[tuple[int, int], ...]) -> list[str]:
    reasons = []
    if config.CHUNK not in CHUNKS:
        reasons.append(f"CHUNK={config.CHUNK}: expected one of {', '.join(map(str, CHUNKS))}")
    if config.BLOCK_C not in BLOCKS:
        reasons.append(f"BLOCK_C={config.BLOCK_C}: expected one of {', '.join(map(str, BLOCKS))}")
    if config.num_warps not in WARPS:
        reasons.append(f"num_warps={config.num_warps}: expected one of {', '.join(map(str, WARPS))}")
    if not 1 <= config.num_stages <= MAX_STAGES:
        reasons.append(f"num_stages={config.num_stages}: expected 1 to {MAX_STAGES}")
    if isinstance(config.SEGMENT, bool) or not isinstance(config.SEGMENT, int) or config.SEGMENT < 0:
        reasons.append(f"SEGMENT={config.SEGMENT!r}: expected 0 (one walk) or a positive multiple of CHUNK")
    elif config.SEGMENT and config.CHUNK in CHUNKS and config.SEGMENT % config.CHUNK:
        reasons.append(f"SEGMENT={config.SEGMENT} is not a multiple of CHUNK={config.CHUNK}")
    if problem.q_len != problem.kv_len:
        reasons.append(f"linear attention is self-attention: q_len={problem.q_len} must equal "
                       f"kv_len={problem.kv_len} (decode one token with linear-decode)")
    if not problem.causal:
        reasons.append("the chunked kernels compute causal linear attention: pass --causal (causal=True)")
    if problem.window is not None:
        reasons.append("linear attention has no window (a decay plays that role)")
    for dim in (problem.head_dim, problem.v_head_dim):
        if not 16 <= dim <= 256:
            reasons.append(f"head dim {dim}: the kernels take 16 to 256")
    if reasons:
        return reasons
    for a_dim, c_dim in walks:
        registers = walk_registers(config, a_dim, c_dim)
        if registers > REGISTER_BUDGET:
            reasons.append(f"state, output and scores need {registers:.0f} fp32 registers per thread "
                           f"(> {REGISTER_BUDGET}): more warps, a smaller CHUNK or BLOCK_C")
            break
    return reasons


def check_config(config: LinearConfig, problem: Problem,
                 limits: DeviceLimits | None = None) -> list[str]:
    """Why `config` cannot run the forward of `problem` (empty list: it can)."""
    if not isinstance(config, LinearConfig):
        return [f"expected a LinearConfig, got {type(config).__name__}"]
    reasons = _walk_reasons(config, problem, ((problem.head_dim, problem.v_head_dim),))
    if not reasons:
        reasons += shared_memory_reasons(shared_memory_bytes(config, problem), limits,
                                         "the chunk ring and the staged state")
    return reasons


def backward_check_config(config: LinearBackwardConfig, problem: Problem,
                          limits: DeviceLimits | None = None) -> list[str]:
    if not isinstance(config, LinearBackwardConfig):
        return [f"expected a LinearBackwardConfig, got {type(config).__name__}"]
    d, dv = problem.head_dim, problem.v_head_dim
    reasons = _walk_reasons(config, problem, ((dv, d), (d, dv)))
    if not reasons:
        reasons += shared_memory_reasons(backward_shared_memory_bytes(config, problem), limits,
                                         "the chunk ring and the staged state")
    return reasons


def default_segment(problem: Problem, chunk: int, block_c: int, columns: int) -> int:
    """einsim.kernel_rules.linear_default_segment for the problem's batch, heads and length."""
    return linear_default_segment(problem.batch, problem.q_heads, problem.q_len, chunk, block_c, columns)


def default_config(problem: Problem) -> LinearConfig:
    """The default walk of einsim.kernel_rules (CHUNK=64, BLOCK_C=64, 4 warps, 3 stages: the
    fastest measured on the H200, W4)."""
    block_c = min(LINEAR_STATE_COLUMNS, padded_head_dim(problem.v_head_dim))
    return LinearConfig(CHUNK=LINEAR_CHUNK, BLOCK_C=block_c, num_warps=LINEAR_WARPS, num_stages=LINEAR_STAGES,
                        SEGMENT=default_segment(problem, LINEAR_CHUNK, block_c, problem.v_head_dim))


def backward_default_config(problem: Problem) -> LinearBackwardConfig:
    block_c = min(LINEAR_STATE_COLUMNS, padded_head_dim(min(problem.head_dim, problem.v_head_dim)))
    return LinearBackwardConfig(CHUNK=LINEAR_CHUNK, BLOCK_C=block_c, num_warps=LINEAR_WARPS,
                                num_stages=LINEAR_BACKWARD_STAGES,
                                SEGMENT=default_segment(problem, LINEAR_CHUNK, block_c, problem.v_head_dim),
                                store_states=True)


def _segments_for(problem: Problem) -> tuple[int, ...]:
    return (0,) + tuple(s for s in (512, 1024, 2048, 4096, 8192) if s < problem.q_len)


def search_space(problem: Problem, limits: DeviceLimits | None = None) -> list[LinearConfig]:
    configs = [LinearConfig(CHUNK=c, BLOCK_C=b, SEGMENT=s, num_warps=w, num_stages=st)
               for c in (32, 64, 128) for b in (32, 64, 128) for s in _segments_for(problem)
               for w in (4, 8) for st in (1, 2, 3)]
    return [c for c in configs if not check_config(c, problem, limits)]


def backward_search_space(problem: Problem,
                          limits: DeviceLimits | None = None) -> list[LinearBackwardConfig]:
    configs = [LinearBackwardConfig(CHUNK=c, BLOCK_C=b, SEGMENT=s, num_warps=w, num_stages=st,
                                    store_states=store)
               for c in (32, 64, 128) for b in (32, 64, 128) for s in _segments_for(problem)
               for w in (4, 8) for st in (1, 2) for store in (True, False)]
    return [c for c in configs if not backward_check_config(c, problem, limits)]


# -- decode ------------------------------------------------------------------------------------------
def decode_shared_memory_bytes(config: LinearDecodeConfig, problem: Problem) -> int:
    """No tiles are staged: the state slice goes through registers; Triton's reductions use a
    little scratch."""
    return SHARED_MEMORY_OVERHEAD + 4 * padded_head_dim(problem.head_dim)


def decode_check_config(config: LinearDecodeConfig, problem: Problem,
                        limits: DeviceLimits | None = None) -> list[str]:
    if not isinstance(config, LinearDecodeConfig):
        return [f"expected a LinearDecodeConfig, got {type(config).__name__}"]
    reasons = []
    if config.BLOCK_C not in BLOCKS:
        reasons.append(f"BLOCK_C={config.BLOCK_C}: expected one of {', '.join(map(str, BLOCKS))}")
    if config.num_warps not in WARPS:
        reasons.append(f"num_warps={config.num_warps}: expected one of {', '.join(map(str, WARPS))}")
    if problem.q_len != 1:
        reasons.append(f"linear-decode takes one token (q_len=1), got q_len={problem.q_len}")
    for dim in (problem.head_dim, problem.v_head_dim):
        if not 16 <= dim <= 256:
            reasons.append(f"head dim {dim}: the kernels take 16 to 256")
    if not reasons:
        registers = padded_head_dim(problem.head_dim) * config.BLOCK_C / (32 * config.num_warps)
        if registers > REGISTER_BUDGET:
            reasons.append(f"the state slice needs {registers:.0f} fp32 registers per thread "
                           f"(> {REGISTER_BUDGET}): more warps or a smaller BLOCK_C")
    return reasons


def decode_default_config(problem: Problem) -> LinearDecodeConfig:
    return LinearDecodeConfig(BLOCK_C=min(32, padded_head_dim(problem.v_head_dim)), num_warps=4)


def decode_search_space(problem: Problem,
                        limits: DeviceLimits | None = None) -> list[LinearDecodeConfig]:
    configs = [LinearDecodeConfig(BLOCK_C=b, num_warps=w) for b in (16, 32, 64, 128) for w in (1, 2, 4, 8)]
    return [c for c in configs if not decode_check_config(c, problem, limits)]


# -- inputs and registration ------------------------------------------------------------------------
def make_linear_inputs(problem: Problem, dtype: str | None = None, device: str = "cuda",
                       seed: int = 0, *, requires_grad: bool = False, decay: bool = True,
                       feature_map: str | None = None) -> dict:
    """Random q, k, v for `problem` (q and k scaled so that phi(q)·phi(k) sums stay O(1)), the
    Lightning-style per-head decay slopes (`lightning_slopes`) unless decay=False, and with
    requires_grad the output gradient "do". Imports torch."""
    import torch

    from einsim.kernels.registry import make_attention_inputs

    inputs = make_attention_inputs(problem, dtype, device, seed, requires_grad=requires_grad)
    inputs["slope"] = (torch.tensor(lightning_slopes(problem.q_heads), dtype=torch.float32, device=device)
                       if decay else None)
    inputs["feature_map"] = feature_map
    return inputs


def lightning_slopes(heads: int) -> list[float]:
    """The per-head decay rates of Lightning Attention / ALiBi: 2^(-8 (h + 1) / heads)
    (exactly ALiBi's geometric sequence for a power-of-two head count)."""
    return [2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)]


def _backward_inputs(problem, dtype=None, device="cuda", seed=0):
    return make_linear_inputs(problem, dtype, device, seed, requires_grad=True)


def _decode_inputs(problem, dtype=None, device="cuda", seed=0):
    """One token (whatever kv_len says: the tokens already folded into the state cost nothing
    more) and a random fp32 state."""
    import dataclasses

    import torch

    token = dataclasses.replace(problem, q_len=1, kv_len=1, causal=False, window=None)
    inputs = make_linear_inputs(token, dtype, device, seed)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    inputs["state"] = torch.randn(problem.batch, problem.q_heads, problem.head_dim, problem.v_head_dim,
                                  generator=generator).to(device)
    return inputs


def _linear_reference(inputs: dict):
    """What the forward must return for `inputs`: the oracle's torch twin in float32 (or float64
    on the CPU)."""
    from einsim.einsum_cascades.reference import linear_attention_reference_torch

    return linear_attention_reference_torch(
        inputs["q"], inputs["k"], inputs["v"], feature_map=inputs.get("feature_map"),
        scale=inputs.get("scale") or inputs["q"].shape[-1] ** -0.5, decay=inputs.get("slope"))


def _linear_backward_reference(inputs: dict):
    """dq, dk, dv of the oracle's torch twin for the output gradient inputs["do"]."""
    import torch

    q, k, v = (inputs[n].detach().float().requires_grad_(True) for n in ("q", "k", "v"))
    with torch.enable_grad():
        out, _ = _linear_reference({**inputs, "q": q, "k": k, "v": v})
        return torch.autograd.grad(out, (q, k, v), inputs["do"].float())


def _decode_reference(inputs: dict):
    from einsim.kernels.linear.naive import recurrent_linear_attention

    out, state = recurrent_linear_attention(
        inputs["q"], inputs["k"], inputs["v"], feature_map=inputs.get("feature_map"),
        scale=inputs.get("scale") or inputs["q"].shape[-1] ** -0.5, decay=inputs.get("slope"),
        initial_state=inputs["state"])
    return out, state


FORWARD = register(KernelSpec(
    name="linear-fwd",
    cascade="linear-attention-decay",
    config_type=LinearConfig,
    default_config=default_config,
    search_space=search_space,
    check_config=check_config,
    shared_memory_bytes=shared_memory_bytes,
    launcher="einsim.kernels.linear.chunk:launch_forward_from_inputs",
    flops=forward_flops,
    min_bytes=forward_min_bytes,
    make_inputs=make_linear_inputs,
    reference=_linear_reference,
    description="chunked causal linear attention with per-head decay (Lightning / RetNet): "
                "masked quadratic term inside each chunk, running [D, Dv] state across chunks",
))

BACKWARD = register(KernelSpec(
    name="linear-bwd",
    cascade="linear-attention-decay",
    config_type=LinearBackwardConfig,
    default_config=backward_default_config,
    search_space=backward_search_space,
    check_config=backward_check_config,
    shared_memory_bytes=backward_shared_memory_bytes,
    launcher="einsim.kernels.linear.chunk:launch_backward_from_inputs",
    flops=backward_flops,
    min_bytes=backward_min_bytes,
    make_inputs=_backward_inputs,
    reference=_linear_backward_reference,
    description="backward of linear-fwd: dQ walks forward with the state, dK and dV walk backward "
                "with the state's gradient; segment states stored by the forward or recomputed",
    direction="backward",
))

DECODE = register(KernelSpec(
    name="linear-decode",
    cascade="linear-attention-decay-recurrent",
    config_type=LinearDecodeConfig,
    default_config=decode_default_config,
    search_space=decode_search_space,
    check_config=decode_check_config,
    shared_memory_bytes=decode_shared_memory_bytes,
    launcher="einsim.kernels.linear.decode:launch_from_inputs",
    flops=decode_flops,
    min_bytes=decode_min_bytes,
    make_inputs=_decode_inputs,
    reference=_decode_reference,
    description="one token against the fp32 [D, Dv] state: decay, add k^T v, read q times it",
))
