"""The decode step of linear attention (`linear-decode`): one new token against the running state,
which is updated in place. docs/kernels.md § Linear attention.

    S = g S + phi(k)^T v        o = scale * phi(q) S        (g = exp(-slope[h]))

A program owns one (batch, query head, BLOCK_C state columns): it reads its [D, BLOCK_C] fp32
slice of the state once, writes it back once, and reduces over D for the output; the step is
bound by that state traffic (4·D·Dv bytes each way per head), not by arithmetic.
"""

from __future__ import annotations

import triton
import triton.language as tl

from einsim.errors import ShapeError
from einsim.kernel_rules import padded_head_dim
from einsim.kernels.linear.chunk import FEATURE_MAPS, _feature, _resolve, _scale
from einsim.kernels.linear.config import LinearDecodeConfig
from einsim.kernels.runtime import check_attention_inputs, interpreting, patch_interpreter
from einsim.problem import Problem


@triton.jit
def _decode_step(
    Q, K, V, Out, State, Slope,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kd,
    stride_vb, stride_vh, stride_vd,
    stride_ob, stride_oh, stride_od,
    stride_sb, stride_sh, stride_sr, stride_sc,
    heads, group, dim, dim_v, scale,
    HAS_DECAY: tl.constexpr, FEATURE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_c = tl.program_id(0)
    bh = tl.program_id(1)
    batch = (bh // heads).to(tl.int64)
    head = bh % heads
    kv_head = (head // group).to(tl.int64)
    rows = tl.arange(0, BLOCK_D)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < dim
    col_ok = cols < dim_v
    q = tl.load(Q + batch * stride_qb + head.to(tl.int64) * stride_qh + rows * stride_qd, mask=row_ok, other=0.0)
    k = tl.load(K + batch * stride_kb + kv_head * stride_kh + rows * stride_kd, mask=row_ok, other=0.0)
    v = tl.load(V + batch * stride_vb + kv_head * stride_vh + cols * stride_vd, mask=col_ok, other=0.0)
    q = tl.where(row_ok, _feature(q.to(tl.float32), FEATURE), 0.0) * scale
    k = tl.where(row_ok, _feature(k.to(tl.float32), FEATURE), 0.0)
    where = (State + batch * stride_sb + head.to(tl.int64) * stride_sh
             + rows[:, None] * stride_sr + cols[None, :] * stride_sc)
    mask = row_ok[:, None] & col_ok[None, :]
    state = tl.load(where, mask=mask, other=0.0)
    if HAS_DECAY:
        state = state * tl.exp(-tl.load(Slope + head).to(tl.float32))
    state = state + k[:, None] * v.to(tl.float32)[None, :]
    tl.store(where, state, mask=mask)
    out = tl.sum(q[:, None] * state, 0)
    tl.store(Out + batch * stride_ob + head.to(tl.int64) * stride_oh + cols * stride_od,
             out.to(Out.dtype.element_ty), mask=col_ok)


def check_decode_inputs(q, k, v, state, *, decay=None, feature_map=None, scale=None) -> Problem:
    """The problem of one decode step: q [B, Hq, 1, D], k [B, Hkv, 1, D], v [B, Hkv, 1, Dv] and an
    fp32 state [B, Hq, D, Dv] (updated in place), or a ShapeError naming what is wrong."""
    import torch

    problem = check_attention_inputs(q, k, v, kernel="linear-decode", scale=scale)
    if problem.q_len != 1 or problem.kv_len != 1:
        raise ShapeError(f"linear-decode: one token per call: q, k, v must have length 1, got "
                         f"{problem.q_len} and {problem.kv_len} (run a prompt through linear_attention "
                         "with output_final_state=True)")
    if feature_map not in FEATURE_MAPS:
        raise ShapeError(f"linear-decode: feature_map must be one of {list(FEATURE_MAPS)}, got {feature_map!r}")
    want = (problem.batch, problem.q_heads, problem.head_dim, problem.v_head_dim)
    if not isinstance(state, torch.Tensor) or tuple(state.shape) != want or state.dtype != torch.float32 \
            or state.device != q.device:
        raise ShapeError(f"linear-decode: state must be a float32 tensor [B, Hq, D, Dv] = {want} on {q.device} "
                         f"(it is updated in place); got {getattr(state, 'shape', type(state).__name__)} "
                         f"{getattr(state, 'dtype', '')}")
    if decay is not None and (not isinstance(decay, torch.Tensor) or tuple(decay.shape) != (problem.q_heads,)
                              or decay.device != q.device):
        raise ShapeError(f"linear-decode: decay must be a tensor of {problem.q_heads} per-head slopes on "
                         f"{q.device}; got {getattr(decay, 'shape', type(decay).__name__)}")
    return problem


def linear_attention_decode(q, k, v, state, *, decay=None, feature_map: str | None = None,
                            scale: float | None = None, config: LinearDecodeConfig | None = None, out=None):
    """One token: state <- g·state + phi(k)ᵀ v in place; returns out = scale·phi(q)·state
    [B, Hq, 1, Dv] in q's dtype. Same conventions as linear_attention (whose final state this
    continues from)."""
    import torch

    problem = check_decode_inputs(q, k, v, state, decay=decay, feature_map=feature_map, scale=scale)
    config = _resolve("linear-decode", config, problem, q.device)
    want = (problem.batch, problem.q_heads, 1, problem.v_head_dim)
    if out is None:
        out = torch.empty(want, dtype=q.dtype, device=q.device)
    elif not isinstance(out, torch.Tensor) or tuple(out.shape) != want or out.dtype != q.dtype \
            or out.device != q.device:  # an IndexError from the launch before
        raise ShapeError(f"linear-decode: out must be a {q.dtype} tensor [B, Hq, 1, Dv] = {want} on {q.device}; "
                         f"got {getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}")
    launch(config, problem, q, k, v, out, state, decay, feature_map, scale)
    return out


def launch(config: LinearDecodeConfig, problem: Problem, q, k, v, out, state, decay, feature_map,
           scale):
    if interpreting():
        patch_interpreter()
    block_c = min(config.BLOCK_C, padded_head_dim(problem.v_head_dim))
    grid = (triton.cdiv(problem.v_head_dim, block_c), problem.batch * problem.q_heads)
    slope = decay.detach().float().contiguous() if decay is not None else state
    _decode_step[grid](
        q, k, v, out, state, slope,
        q.stride(0), q.stride(1), q.stride(3), k.stride(0), k.stride(1), k.stride(3),
        v.stride(0), v.stride(1), v.stride(3), out.stride(0), out.stride(1), out.stride(3),
        *state.stride(),
        problem.q_heads, problem.group_size, problem.head_dim, problem.v_head_dim, _scale(scale, problem.head_dim),
        HAS_DECAY=decay is not None, FEATURE=FEATURE_MAPS[feature_map],
        BLOCK_D=padded_head_dim(problem.head_dim), BLOCK_C=block_c, num_warps=config.num_warps)
    return out


def launch_from_inputs(config: LinearDecodeConfig, inputs: dict):
    """The registry's launcher: (out, state) after one step, updating inputs["state"] in place as
    a decoder does (a timing loop steps on through the sequence)."""
    state = inputs["state"]
    out = linear_attention_decode(inputs["q"], inputs["k"], inputs["v"], state, decay=inputs.get("slope"),
                                  feature_map=inputs.get("feature_map"), scale=inputs.get("scale"),
                                  config=config)
    return out, state


__all__ = ["linear_attention_decode", "launch", "launch_from_inputs"]
