"""Triton helpers every pass of the multi-pass kernels shares: the program's query tile and
head slices, the visited key range of a query tile, one masked tile of scores QK (base-2 units,
so that all passes see identical tiles), the output's store, and the launch constants."""

from __future__ import annotations

import math

import triton
import triton.language as tl

from einsim.kernel_rules import padded_head_dim

LOG2_E = 1.4426950408889634
LN_2 = tl.constexpr(0.6931471805599453)  # a constexpr: jit code may read it


@triton.jit
def program_tile(q_heads, BLOCK_M: tl.constexpr):
    """The program's (batch x query head) index pid_bh (64-bit, so batch and head offsets do not
    overflow), its batch and query head, and its query tile's first row and rows; every pass
    launches on the grid (query tiles, batch * query heads)."""
    pid_bh = tl.program_id(1).to(tl.int64)
    start_m = tl.program_id(0) * BLOCK_M
    return pid_bh, pid_bh // q_heads, pid_bh % q_heads, start_m, start_m + tl.arange(0, BLOCK_M)


@triton.jit
def head_slice(X, batch, head, stride_b, stride_h):
    """X's [batch, head] slice; K and V take the key/value head of the query head's group."""
    return X + batch * stride_b + head * stride_h


@triton.jit
def store_rows(Out, Lse, out, lse, pid_bh, batch, head, rows, offs_dv, stride_ob, stride_oh, stride_om,
               stride_od, q_len, v_head_dim):
    """The last pass's output rows (in Out's dtype) and their log-sum-exp."""
    row_ok = rows < q_len
    o_ptrs = Out + batch * stride_ob + head * stride_oh + rows[:, None] * stride_om + offs_dv[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & (offs_dv[None, :] < v_head_dim))
    tl.store(Lse + pid_bh * q_len + rows, lse, mask=row_ok)


def launch_constants(plan, problem, config) -> tuple[tuple[int, int], float, int, int, dict]:
    """What every pass's launch shares: the grid, scale * log2(e), the window (0, 0 when none)
    and the compile-time flags and tile sizes (the head dims padded as the kernels tile them)."""
    scale = 1.0 / math.sqrt(problem.head_dim) if plan.scale is None else float(plan.scale)
    left, right = problem.window or (0, 0)
    grid = (triton.cdiv(problem.q_len, config.BLOCK_M), problem.batch * problem.q_heads)
    flags = dict(MATERIALIZE=config.MATERIALIZE, IS_CAUSAL=problem.causal, HAS_WINDOW=problem.window is not None,
                 DOT_FP32=plan.dot_fp32, BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N,
                 BLOCK_D=padded_head_dim(problem.head_dim), num_warps=config.num_warps,
                 num_stages=config.num_stages)
    return grid, scale * LOG2_E, left, right, flags


@triton.jit
def key_range(start_m, q_len, kv_len, window_left, window_right,
              IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys [lo, hi) of the query tile at start_m; twin of config.key_range (keep them equal)."""
    offset = kv_len - q_len
    last_row = tl.minimum(start_m + BLOCK_M, q_len) - 1
    lo = 0
    hi = kv_len
    if IS_CAUSAL:
        hi = tl.minimum(hi, last_row + offset + 1)
    if HAS_WINDOW:
        lo = tl.maximum(0, start_m + offset - window_left)
        hi = tl.minimum(hi, last_row + offset + window_right + 1)
    lo = (lo // BLOCK_N) * BLOCK_N
    return lo, hi


@triton.jit
def load_q(Q, rows, offs_d, stride_qm, stride_qd, q_len, head_dim):
    mask = (rows[:, None] < q_len) & (offs_d[None, :] < head_dim)
    return tl.load(Q + rows[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=mask, other=0.0)


@triton.jit
def load_v(V, cols, offs_dv, stride_vn, stride_vd, kv_len, v_head_dim):
    mask = (cols[:, None] < kv_len) & (offs_dv[None, :] < v_head_dim)
    return tl.load(V + cols[:, None] * stride_vn + offs_dv[None, :] * stride_vd, mask=mask, other=0.0)


@triton.jit
def tile_scores(q, K, rows, cols, offs_d, stride_kn, stride_kd, q_len, kv_len, head_dim,
                scale_log2, window_left, window_right,
                IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, DOT_FP32: tl.constexpr):
    """QK of one tile times scale·log2(e), with invisible keys set to -inf."""
    k_mask = (cols[None, :] < kv_len) & (offs_d[:, None] < head_dim)
    kt = tl.load(K + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd, mask=k_mask, other=0.0)
    if DOT_FP32:
        qk = tl.dot(q.to(tl.float32), kt.to(tl.float32))
    else:
        qk = tl.dot(q, kt)
    qk = qk * scale_log2
    query_pos = rows[:, None] + (kv_len - q_len)
    visible = (cols[None, :] < kv_len) & (rows[:, None] >= 0)
    if IS_CAUSAL:
        visible = visible & (cols[None, :] <= query_pos)
    if HAS_WINDOW:
        visible = visible & (cols[None, :] >= query_pos - window_left)
        visible = visible & (cols[None, :] <= query_pos + window_right)
    return tl.where(visible, qk, float("-inf"))


@triton.jit
def dot_pv(p, v, acc, DOT_FP32: tl.constexpr):
    """acc + p·V with p rounded to V's dtype, as every fused kernel does."""
    if DOT_FP32:
        return tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc)
    return tl.dot(p.to(v.dtype), v, acc)
