"""The split-KV decode kernel: the `decode-splitkv` cascade (flash-decoding) on the GPU.

Split pass: one program per (KV chunk, row tile, batch·KV head). Its tile packs the query heads
that share the KV head with the query positions (rows = group · q_len), so K and V are read
once for the whole group. It walks its chunk with the 1-pass online softmax (running max RM,
running sum RD, running numerator RNV) and writes the chunk's (max, sum, numerator) to HBM.
Merge: one program per (batch·KV head, row) rescales the partials to the global max, sums them,
divides, and writes the output and the log-sum-exp. docs/kernels.md § Decode.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

from einsim.kernels.decode.config import padded_dims
from einsim.kernels.decode.softmax import fold_partial, fold_tile
from einsim.kernels.launch import DescriptorFactory, TritonLaunch
from einsim.kernels import runtime

LOG2_E = 1.4426950408889634
LN_2 = tl.constexpr(0.6931471805599453)  # a constexpr: jit code may read it
MERGE_BLOCK_S = 16


@triton.jit
def _attend_tile(q, k_base, v_base, batch, kv_head, start_n, end, qi, m_i, l_i, acc,
                 offs_n, offs_d, offs_dv, stride_kn, stride_kd, stride_vn, stride_vd,
                 q_len, kv_len, head_dim, v_head_dim, scale_log2, window_left, window_right,
                 MASKED: tl.constexpr, EVEN_D: tl.constexpr, IS_CAUSAL: tl.constexpr,
                 HAS_WINDOW: tl.constexpr, DOT_FP32: tl.constexpr, USE_TMA: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """One key tile of the online softmax; MASKED tiles check lengths, causality and windows.

    With USE_TMA, k_base and v_base are 4-D tensor descriptors over [B, Hkv, Nk, D]: the copy
    engine fills out-of-range keys and head-dim columns with zeros, so no load needs a mask.
    """
    cols = start_n + offs_n
    if USE_TMA:
        kt = tl.trans(tl.reshape(k_base.load([batch, kv_head, start_n, 0]), [BLOCK_N, BLOCK_D]))
        v = tl.reshape(v_base.load([batch, kv_head, start_n, 0]), [BLOCK_N, BLOCK_DV])
    elif MASKED:
        k_ptrs = k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_dv[None, :] * stride_vd
        kt = tl.load(k_ptrs, mask=(cols[None, :] < end) & (offs_d[:, None] < head_dim), other=0.0)
        v = tl.load(v_ptrs, mask=(cols[:, None] < end) & (offs_dv[None, :] < v_head_dim), other=0.0)
    elif EVEN_D:
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_dv[None, :] * stride_vd)
    else:
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=offs_d[:, None] < head_dim, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
                    mask=offs_dv[None, :] < v_head_dim, other=0.0)
    if DOT_FP32:
        qk = tl.dot(q.to(tl.float32), kt.to(tl.float32))
    else:
        qk = tl.dot(q, kt)
    qk = qk * scale_log2
    if MASKED:
        query_pos = qi[:, None] + (kv_len - q_len)
        visible = (cols[None, :] < end) & (qi[:, None] >= 0)
        if IS_CAUSAL:
            visible = visible & (cols[None, :] <= query_pos)
        if HAS_WINDOW:
            visible = visible & (cols[None, :] >= query_pos - window_left)
            visible = visible & (cols[None, :] <= query_pos + window_right)
        qk = tl.where(visible, qk, float("-inf"))
    return fold_tile(m_i, l_i, acc, qk, v, DOT_FP32)


@triton.jit
def _decode_split(
    Q, K, V, Partials, n_partials,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    kv_heads, group, q_len, kv_len, rows_total, head_dim, v_head_dim,
    kv_lo, kv_hi, split_len, num_splits, scale_log2, window_left, window_right,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, DOT_FP32: tl.constexpr, EVEN_D: tl.constexpr,
    USE_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    split = tl.program_id(0)
    pid_r = tl.program_id(1)
    pid_bh = tl.program_id(2).to(tl.int64)  # 64-bit batch and head offsets
    batch = pid_bh // kv_heads
    kv_head = pid_bh % kv_heads
    rows = pid_r * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < rows_total
    qg = rows // q_len  # query head inside the group
    qi = rows % q_len  # query position
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_ptrs = (Q + batch * stride_qb + (kv_head * group + qg)[:, None] * stride_qh
              + qi[:, None] * stride_qm + offs_d[None, :] * stride_qd)
    q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < head_dim), other=0.0)
    if USE_TMA:
        k_base = K
        v_base = V
    else:
        k_base = K + batch * stride_kb + kv_head * stride_kh
        v_base = V + batch * stride_vb + kv_head * stride_vh

    start = kv_lo + split * split_len
    end = tl.minimum(start + split_len, kv_hi)
    # Keys below mask_from are visible to every row: those tiles need no mask at all.
    mask_from = end
    if IS_CAUSAL:
        mask_from = tl.minimum(mask_from, kv_len - q_len + 1)
    if HAS_WINDOW:
        mask_from = start
    full_end = start + (tl.maximum(mask_from - start, 0) // BLOCK_N) * BLOCK_N

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(start, full_end, BLOCK_N):
        m_i, l_i, acc = _attend_tile(
            q, k_base, v_base, batch.to(tl.int32), kv_head.to(tl.int32), start_n, end, qi, m_i, l_i, acc, offs_n, offs_d, offs_dv,
            stride_kn, stride_kd, stride_vn, stride_vd, q_len, kv_len, head_dim, v_head_dim,
            scale_log2, window_left, window_right,
            False, EVEN_D, IS_CAUSAL, HAS_WINDOW, DOT_FP32, USE_TMA, BLOCK_N, BLOCK_D, BLOCK_DV)
    for start_n in range(full_end, end, BLOCK_N):
        m_i, l_i, acc = _attend_tile(
            q, k_base, v_base, batch.to(tl.int32), kv_head.to(tl.int32), start_n, end, qi, m_i, l_i, acc, offs_n, offs_d, offs_dv,
            stride_kn, stride_kd, stride_vn, stride_vd, q_len, kv_len, head_dim, v_head_dim,
            scale_log2, window_left, window_right,
            True, EVEN_D, IS_CAUSAL, HAS_WINDOW, DOT_FP32, USE_TMA, BLOCK_N, BLOCK_D, BLOCK_DV)

    partial = (pid_bh * num_splits + split) * rows_total + rows
    # One fp32 scratch buffer: n_partials maxima, n_partials sums, then the numerators.
    tl.store(Partials + partial, m_i, mask=row_ok)
    tl.store(Partials + n_partials + partial, l_i, mask=row_ok)
    tl.store(Partials + 2 * n_partials + partial[:, None] * v_head_dim + offs_dv[None, :], acc,
             mask=row_ok[:, None] & (offs_dv[None, :] < v_head_dim))


@triton.jit
def _decode_merge(
    Partials, n_partials, Out, Lse,
    stride_ob, stride_oh, stride_om, stride_od,
    kv_heads, group, q_len, rows_total, v_head_dim, num_splits,
    BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row = pid % rows_total
    pid_bh = pid // rows_total
    batch = pid_bh // kv_heads
    head = (pid_bh % kv_heads) * group + row // q_len
    position = row % q_len
    offs_s = tl.arange(0, BLOCK_S)
    offs_dv = tl.arange(0, BLOCK_DV)
    dv_ok = offs_dv < v_head_dim
    # Lane s merges splits s, s + BLOCK_S, ...; the lanes are merged at the end.
    m_s = tl.full([BLOCK_S], float("-inf"), tl.float32)
    l_s = tl.zeros([BLOCK_S], tl.float32)
    acc_s = tl.zeros([BLOCK_S, BLOCK_DV], tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        splits = s0 + offs_s
        ok = splits < num_splits
        partial = (pid_bh * num_splits + splits) * rows_total + row
        pm = tl.load(Partials + partial, mask=ok, other=float("-inf"))
        pl = tl.load(Partials + n_partials + partial, mask=ok, other=0.0)
        pacc = tl.load(Partials + 2 * n_partials + partial[:, None] * v_head_dim + offs_dv[None, :],
                       mask=ok[:, None] & dv_ok[None, :], other=0.0)
        m_s, l_s, acc_s = fold_partial(m_s, l_s, acc_s, pm, pl, pacc)
    m = tl.max(m_s, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    weight = tl.exp2(m_s - m_safe)
    total = tl.sum(weight * l_s, 0)
    acc = tl.sum(weight[:, None] * acc_s, 0)
    empty = total == 0.0
    out = acc / tl.where(empty, 1.0, total)
    lse = tl.where(empty, float("-inf"), (m_safe + tl.log2(tl.where(empty, 1.0, total))) * LN_2)
    o_ptrs = Out + batch * stride_ob + head * stride_oh + position * stride_om + offs_dv * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=dv_ok)
    tl.store(Lse + (batch * kv_heads * group + head) * q_len + position, lse)


def run(plan, q, k, v):
    """Split pass then merge of a DecodePlan on checked inputs. Returns (out, lse)."""
    problem, config, split = plan.problem, plan.config, plan.split
    b, hkv, nq = problem.batch, problem.kv_heads, problem.q_len
    rows = problem.group_size * nq
    n_partials = b * hkv * split.num_splits * rows
    partials = runtime.scratch((n_partials * (2 + problem.v_head_dim),), q.device)
    out = runtime.empty_output((b, problem.q_heads, nq, problem.v_head_dim), q.device, q.dtype)
    lse = runtime.empty_output((b, problem.q_heads, nq), q.device)
    if config.USE_TMA:
        factories = plan.descriptors
        if factories is None:
            block_d, block_dv = padded_dims(problem)
            factories = plan.descriptors = (
                DescriptorFactory(k, [1, 1, config.BLOCK_N, block_d]),
                DescriptorFactory(v, [1, 1, config.BLOCK_N, block_dv]))
        k_arg, v_arg = factories[0](k), factories[1](v)
    else:
        k_arg, v_arg = k, v
    split_args = (q, k_arg, v_arg, partials)
    merge_args = (partials, out, lse)
    launches = plan.launches
    if launches is None:
        launches = plan.launches = _make_launches(plan, q, k, v, out, split_args, merge_args)
    launches[0](*split_args)
    launches[1](*merge_args)
    return out, lse


def _make_launches(plan, q, k, v, out, split_args, merge_args):
    problem, config, split = plan.problem, plan.config, plan.split
    block_d, block_dv = padded_dims(problem)
    b, hkv, nq, nk = problem.batch, problem.kv_heads, problem.q_len, problem.kv_len
    rows = problem.group_size * nq
    scale = 1.0 / math.sqrt(problem.head_dim) if plan.scale is None else float(plan.scale)
    left, right = problem.window or (0, 0)
    even_d = problem.head_dim == block_d and problem.v_head_dim == block_dv
    n_partials = b * hkv * split.num_splits * rows
    split_launch = TritonLaunch(
        _decode_split, (split.num_splits, triton.cdiv(rows, config.BLOCK_M), b * hkv), *split_args,
        n_partials, *q.stride(), *k.stride(), *v.stride(),
        hkv, problem.group_size, nq, nk, rows, problem.head_dim, problem.v_head_dim,
        split.kv_lo, split.kv_hi, split.split_len, split.num_splits, scale * LOG2_E, left, right,
        IS_CAUSAL=problem.causal, HAS_WINDOW=problem.window is not None, DOT_FP32=plan.dot_fp32,
        EVEN_D=even_d, USE_TMA=config.USE_TMA,
        BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N, BLOCK_D=block_d, BLOCK_DV=block_dv,
        num_warps=config.num_warps, num_stages=config.num_stages)
    partials, out_, lse = merge_args
    merge_launch = TritonLaunch(
        _decode_merge, (b * hkv * rows,), partials, n_partials, out_, lse, *out.stride(), hkv, problem.group_size, nq, rows,
        problem.v_head_dim, split.num_splits, BLOCK_S=MERGE_BLOCK_S, BLOCK_DV=block_dv,
        num_warps=4 if block_dv >= 128 else 2)
    return split_launch, merge_launch
