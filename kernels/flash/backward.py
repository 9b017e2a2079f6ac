"""The backward of the fused forward (`attention-bwd`) and the autograd Function over both.

Three launches, no atomics, deterministic:
1. preprocess, per query tile: delta = rowsum(dO ∘ O) and lse in base-2 units (-inf -> +inf so a
   row that saw no key gets P = 0 everywhere);
2. dK/dV, per key tile and key/value head: walk the query tiles (of every query head of the GQA
   group) that see the tile, recompute Pᵀ = exp2(K·Qᵀ·scale - lse), dV += Pᵀ·dO,
   dSᵀ = Pᵀ ∘ (V·dOᵀ - delta), dK += dSᵀ·Q;
3. dQ, per query tile and query head: walk the visible key tiles, recompute P,
   dS = P ∘ (dO·Vᵀ - delta), dQ += dS·K.
Edge tiles are masked, the tiles between them are not, as in the forward (docs/kernels.md).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from einsim.errors import ShapeError
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig
from einsim.kernels.flash.forward import (TMA_MIN_FLOPS, flash_forward, io_dtype, remember_launch,
                                          resolve_config, window_args)
from einsim.kernels.flash.tiles import (LOG2_E, key_bounds, load_tile, query_bounds, store_tile,
                                        visible, visible_t)
from einsim.kernels.launch import DescriptorFactory, TritonLaunch, plan_cache, tensor_key
from einsim.kernels.limits import padded_head_dim
from einsim.kernels.runtime import (check_attention_inputs, interpreter_needs_fp32_dots,
                                    interpreting, patch_interpreter, tma_compatible)


@triton.jit
def _backward_preprocess(
    Out, DO, Lse, Delta, Lse2,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_gb, stride_gh, stride_gm, stride_gd,
    q_heads, q_len, v_head_dim,
    BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    batch = bh // q_heads
    head = bh % q_heads
    rows = start_m + tl.arange(0, BLOCK_M)
    o = load_tile(Out, batch, head, start_m, q_len, v_head_dim,
                  stride_ob, stride_oh, stride_om, stride_od, BLOCK_M, BLOCK_DV, False)
    do = load_tile(DO, batch, head, start_m, q_len, v_head_dim,
                   stride_gb, stride_gh, stride_gm, stride_gd, BLOCK_M, BLOCK_DV, False)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    row_ok = rows < q_len
    offsets = bh.to(tl.int64) * q_len + rows
    lse = tl.load(Lse + offsets, mask=row_ok, other=0.0)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    tl.store(Delta + offsets, delta, mask=row_ok)
    tl.store(Lse2 + offsets, lse2, mask=row_ok)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, Q, DO, DQ, Lse2, Delta, batch, head, bh, cols, lo, hi,
                q_len, kv_len, head_dim, v_head_dim, scale, qk_scale, window_left, window_right,
                stride_qb, stride_qh, stride_qm, stride_qd,
                stride_gb, stride_gh, stride_gm, stride_gd,
                stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                USE_TMA: tl.constexpr, DOT_FP32: tl.constexpr, IO_DTYPE: tl.constexpr,
                DQ_ATOMIC: tl.constexpr, DQ_TMA: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Query tiles [lo, hi) of one query head against the resident key tile. With DQ_ATOMIC,
    also dQ[tile] += dS·K·scale, reduced into the fp32 buffer DQ (TMA reduce-add)."""
    offs_m = tl.arange(0, BLOCK_M)
    for start_m in tl.range(lo, hi, BLOCK_M):
        start_m = tl.multiple_of(start_m, BLOCK_M)
        rows = start_m + offs_m
        q = load_tile(Q, batch, head, start_m, q_len, head_dim,
                      stride_qb, stride_qh, stride_qm, stride_qd, BLOCK_M, BLOCK_D, USE_TMA)
        do = load_tile(DO, batch, head, start_m, q_len, v_head_dim,
                       stride_gb, stride_gh, stride_gm, stride_gd, BLOCK_M, BLOCK_DV, USE_TMA)
        row_ok = rows < q_len
        # Rows past the end get lse = +inf, hence P = 0: no row mask needed in unmasked tiles.
        m = tl.load(Lse2 + bh.to(tl.int64) * q_len + rows, mask=row_ok, other=float("inf"))
        delta = tl.load(Delta + bh.to(tl.int64) * q_len + rows, mask=row_ok, other=0.0)
        if DOT_FP32:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        qk_t = tl.dot(k, tl.trans(q))
        p_t = tl.math.exp2(qk_t * qk_scale - m[None, :])
        if MASKED:
            keep = visible_t(cols, rows, q_len, kv_len, window_left, window_right,
                             IS_CAUSAL, HAS_WINDOW)
            p_t = tl.where(keep, p_t, 0.0)
        if DOT_FP32:
            dv = tl.dot(p_t.to(IO_DTYPE).to(tl.float32), do, dv)
        else:
            dv = tl.dot(p_t.to(IO_DTYPE), do, dv)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        if DOT_FP32:
            ds_io = ds_t.to(IO_DTYPE).to(tl.float32)
        else:
            ds_io = ds_t.to(IO_DTYPE)
        dk = tl.dot(ds_io, q, dk)
        if DQ_ATOMIC:
            dq = tl.dot(tl.trans(ds_io), k) * scale
            if DQ_TMA:
                DQ.atomic_add([batch, head, start_m, 0], dq.reshape([1, 1, BLOCK_M, BLOCK_D]))
            else:
                offs_d = tl.arange(0, BLOCK_D)
                base = DQ + batch.to(tl.int64) * stride_dqb + head.to(tl.int64) * stride_dqh
                tl.atomic_add(base + rows[:, None] * stride_dqm + offs_d[None, :] * stride_dqd, dq,
                              mask=(rows[:, None] < q_len) & (offs_d[None, :] < head_dim),
                              sem="relaxed")
    return dk, dv


@triton.jit
def _dkdv_program(
    pid_n, bkh,
    Q, K, V, DO, DK, DV, DQ, Lse2, Delta,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    q_heads, kv_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
    window_left, window_right,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, USE_TMA: tl.constexpr,
    DOT_FP32: tl.constexpr, IO_DTYPE: tl.constexpr, DQ_ATOMIC: tl.constexpr,
    DQ_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """dK, dV of the key tile pid_n of batch x key/value head bkh."""
    start_n = pid_n * BLOCK_N
    batch = bkh // kv_heads
    kv_head = bkh % kv_heads
    cols = start_n + tl.arange(0, BLOCK_N)
    k = load_tile(K, batch, kv_head, start_n, kv_len, head_dim,
                  stride_kb, stride_kh, stride_kn, stride_kd, BLOCK_N, BLOCK_D, USE_TMA)
    v = load_tile(V, batch, kv_head, start_n, kv_len, v_head_dim,
                  stride_vb, stride_vh, stride_vn, stride_vd, BLOCK_N, BLOCK_DV, USE_TMA)
    if DOT_FP32:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    lo, mid_lo, mid_hi, hi = query_bounds(start_n, q_len, kv_len, window_left, window_right,
                                          IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    # dK and dV of a key/value head sum over every query head of its GQA group: one program
    # walks them all, so no two programs write the same rows (no atomics).
    for g in range(0, group):
        head = kv_head * group + g
        bh = batch * q_heads + head
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, DQ, Lse2, Delta, batch, head, bh, cols, lo, mid_lo,
            q_len, kv_len, head_dim, v_head_dim, scale, qk_scale, window_left, window_right,
            stride_qb, stride_qh, stride_qm, stride_qd, stride_gb, stride_gh, stride_gm, stride_gd,
            stride_dqb, stride_dqh, stride_dqm, stride_dqd,
            True, IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE, DQ_ATOMIC,
            DQ_TMA, BLOCK_M, BLOCK_D, BLOCK_DV)
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, DQ, Lse2, Delta, batch, head, bh, cols, mid_lo, mid_hi,
            q_len, kv_len, head_dim, v_head_dim, scale, qk_scale, window_left, window_right,
            stride_qb, stride_qh, stride_qm, stride_qd, stride_gb, stride_gh, stride_gm, stride_gd,
            stride_dqb, stride_dqh, stride_dqm, stride_dqd,
            False, IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE, DQ_ATOMIC,
            DQ_TMA, BLOCK_M, BLOCK_D, BLOCK_DV)
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, DQ, Lse2, Delta, batch, head, bh, cols, mid_hi, hi,
            q_len, kv_len, head_dim, v_head_dim, scale, qk_scale, window_left, window_right,
            stride_qb, stride_qh, stride_qm, stride_qd, stride_gb, stride_gh, stride_gm, stride_gd,
            stride_dqb, stride_dqh, stride_dqm, stride_dqd,
            True, IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE, DQ_ATOMIC,
            DQ_TMA, BLOCK_M, BLOCK_D, BLOCK_DV)
    dk = dk * scale
    store_tile(DK, dk.to(IO_DTYPE), batch, kv_head, start_n, kv_len, head_dim,
               stride_dkb, stride_dkh, stride_dkn, stride_dkd, BLOCK_N, BLOCK_D, USE_TMA)
    store_tile(DV, dv.to(IO_DTYPE), batch, kv_head, start_n, kv_len, v_head_dim,
               stride_dvb, stride_dvh, stride_dvn, stride_dvd, BLOCK_N, BLOCK_DV, USE_TMA)


@triton.jit
def _dq_tiles(dq, q, do, m, delta, K, V, batch, kv_head, rows, lo, hi,
              q_len, kv_len, head_dim, v_head_dim, qk_scale, window_left, window_right,
              stride_kb, stride_kh, stride_kn, stride_kd,
              stride_vb, stride_vh, stride_vn, stride_vd,
              MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
              USE_TMA: tl.constexpr, DOT_FP32: tl.constexpr, IO_DTYPE: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in tl.range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k = load_tile(K, batch, kv_head, start_n, kv_len, head_dim,
                      stride_kb, stride_kh, stride_kn, stride_kd, BLOCK_N, BLOCK_D, USE_TMA)
        v = load_tile(V, batch, kv_head, start_n, kv_len, v_head_dim,
                      stride_vb, stride_vh, stride_vn, stride_vd, BLOCK_N, BLOCK_DV, USE_TMA)
        if DOT_FP32:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        qk = tl.dot(q, tl.trans(k))
        p = tl.math.exp2(qk * qk_scale - m[:, None])
        if MASKED:
            keep = visible(rows, start_n + offs_n, q_len, kv_len, window_left, window_right,
                           IS_CAUSAL, HAS_WINDOW)
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        if DOT_FP32:
            dq = tl.dot(ds.to(IO_DTYPE).to(tl.float32), k, dq)
        else:
            dq = tl.dot(ds.to(IO_DTYPE), k, dq)
    return dq


@triton.jit
def _dq_program(
    pid_m, bh,
    Q, K, V, DO, DQ, Lse2, Delta,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    q_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
    window_left, window_right, num_m_tiles,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, USE_TMA: tl.constexpr,
    DOT_FP32: tl.constexpr, IO_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """dQ of the query tile pid_m (counted from the end: longest first) of batch x head bh."""
    start_m = (num_m_tiles - 1 - pid_m) * BLOCK_M
    batch = bh // q_heads
    head = bh % q_heads
    kv_head = head // group
    rows = start_m + tl.arange(0, BLOCK_M)
    row_ok = rows < q_len
    q = load_tile(Q, batch, head, start_m, q_len, head_dim,
                  stride_qb, stride_qh, stride_qm, stride_qd, BLOCK_M, BLOCK_D, USE_TMA)
    do = load_tile(DO, batch, head, start_m, q_len, v_head_dim,
                   stride_gb, stride_gh, stride_gm, stride_gd, BLOCK_M, BLOCK_DV, USE_TMA)
    if DOT_FP32:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    m = tl.load(Lse2 + bh.to(tl.int64) * q_len + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(Delta + bh.to(tl.int64) * q_len + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    lo, mid_lo, mid_hi, hi = key_bounds(start_m, q_len, kv_len, window_left, window_right,
                                        IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    dq = _dq_tiles(dq, q, do, m, delta, K, V, batch, kv_head, rows, lo, mid_lo,
                   q_len, kv_len, head_dim, v_head_dim, qk_scale, window_left, window_right,
                   stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn,
                   stride_vd, True, IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE,
                   BLOCK_N, BLOCK_D, BLOCK_DV)
    dq = _dq_tiles(dq, q, do, m, delta, K, V, batch, kv_head, rows, mid_lo, mid_hi,
                   q_len, kv_len, head_dim, v_head_dim, qk_scale, window_left, window_right,
                   stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn,
                   stride_vd, False, IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE,
                   BLOCK_N, BLOCK_D, BLOCK_DV)
    dq = _dq_tiles(dq, q, do, m, delta, K, V, batch, kv_head, rows, mid_hi, hi,
                   q_len, kv_len, head_dim, v_head_dim, qk_scale, window_left, window_right,
                   stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn,
                   stride_vd, True, IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE,
                   BLOCK_N, BLOCK_D, BLOCK_DV)
    dq = dq * scale
    store_tile(DQ, dq.to(IO_DTYPE), batch, head, start_m, q_len, head_dim,
               stride_dqb, stride_dqh, stride_dqm, stride_dqd, BLOCK_M, BLOCK_D, USE_TMA)


@triton.jit
def _flash_backward_dkdv(
    Q, K, V, DO, DK, DV, DQ, Lse2, Delta,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    q_heads, kv_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
    window_left, window_right,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, USE_TMA: tl.constexpr,
    DOT_FP32: tl.constexpr, IO_DTYPE: tl.constexpr, DQ_ATOMIC: tl.constexpr,
    DQ_TMA: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    _dkdv_program(
        tl.program_id(0), tl.program_id(1),
        Q, K, V, DO, DK, DV, DQ, Lse2, Delta,
        stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd, stride_gb, stride_gh, stride_gm, stride_gd,
        stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn,
        stride_dvd, stride_dqb, stride_dqh, stride_dqm, stride_dqd,
        q_heads, kv_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
        window_left, window_right,
        IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE, DQ_ATOMIC, DQ_TMA,
        BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV)


@triton.jit
def _flash_backward_dq(
    Q, K, V, DO, DQ, Lse2, Delta,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    q_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
    window_left, window_right, num_m_tiles,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, USE_TMA: tl.constexpr,
    DOT_FP32: tl.constexpr, IO_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    _dq_program(
        tl.program_id(0), tl.program_id(1),
        Q, K, V, DO, DQ, Lse2, Delta,
        stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
        stride_vb, stride_vh, stride_vn, stride_vd, stride_gb, stride_gh, stride_gm, stride_gd,
        stride_dqb, stride_dqh, stride_dqm, stride_dqd,
        q_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
        window_left, window_right, num_m_tiles,
        IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV)


@triton.jit
def _flash_backward_one_launch(
    Q1, K1, V1, DO1, Q2, K2, V2, DO2, DK, DV, DQ, Lse2, Delta,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    q_heads, kv_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
    window_left, window_right, num_key_tiles, num_m_tiles, dkdv_programs,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, USE_TMA: tl.constexpr,
    DOT_FP32: tl.constexpr, IO_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M_DQ: tl.constexpr,
    BLOCK_N_DQ: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """dK/dV programs, then dQ programs, in one grid: the dQ programs fill the SMs the last
    wave of dK/dV programs leaves idle (two launches each end on a partial wave). Q1..DO1 are
    addressed in the dK/dV tiles, Q2..DO2 in the dQ tiles (descriptors fix their tile shape)."""
    pid = tl.program_id(0)
    if pid < dkdv_programs:
        _dkdv_program(
            pid % num_key_tiles, pid // num_key_tiles,
            Q1, K1, V1, DO1, DK, DV, DQ, Lse2, Delta,
            stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
            stride_vb, stride_vh, stride_vn, stride_vd, stride_gb, stride_gh, stride_gm, stride_gd,
            stride_dkb, stride_dkh, stride_dkn, stride_dkd, stride_dvb, stride_dvh, stride_dvn,
            stride_dvd, stride_dqb, stride_dqh, stride_dqm, stride_dqd,
            q_heads, kv_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
            window_left, window_right,
            IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE, False, False,
            BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV)
    else:
        pid = pid - dkdv_programs
        _dq_program(
            pid % num_m_tiles, pid // num_m_tiles,
            Q2, K2, V2, DO2, DQ, Lse2, Delta,
            stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
            stride_vb, stride_vh, stride_vn, stride_vd, stride_gb, stride_gh, stride_gm, stride_gd,
            stride_dqb, stride_dqh, stride_dqm, stride_dqd,
            q_heads, group, q_len, kv_len, head_dim, v_head_dim, scale, qk_scale,
            window_left, window_right, num_m_tiles,
            IS_CAUSAL, HAS_WINDOW, USE_TMA, DOT_FP32, IO_DTYPE,
            BLOCK_M_DQ, BLOCK_N_DQ, BLOCK_D, BLOCK_DV)


def _check_like(name, tensor, reference):
    if not isinstance(tensor, torch.Tensor):
        raise ShapeError(f"attention-bwd: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if (tuple(tensor.shape) != tuple(reference.shape) or tensor.dtype != reference.dtype
            or tensor.device != reference.device):
        raise ShapeError(f"attention-bwd: {name} must be {tuple(reference.shape)} {reference.dtype} "
                         f"on {reference.device}, got {tuple(tensor.shape)} {tensor.dtype} on "
                         f"{tensor.device}")


class BackwardPlan:
    """What a backward call of one key needs, decided once (docs/kernels.md § Launch plans):
    the checked problem, the resolved config, the launches (built on the first call, with
    tensor descriptors of fixed shape when TMA can address every tensor)."""

    __slots__ = ("problem", "config", "scale", "use_tma", "dq_tma", "launches", "descriptors",
                 "pre_block", "block_d", "block_dv")

    def __init__(self, problem, config: FlashBackwardConfig, scale, use_tma: bool) -> None:
        self.problem = problem
        self.config = config
        self.scale = 1.0 / math.sqrt(problem.head_dim) if scale is None else float(scale)
        self.use_tma = use_tma
        # Triton 3.6's interpreter has no descriptor reduce: element-wise atomics there.
        self.dq_tma = use_tma and not interpreting()
        self.launches = None
        self.descriptors = {}
        self.block_d = padded_head_dim(problem.head_dim)
        self.block_dv = padded_head_dim(problem.v_head_dim)
        self.pre_block = 64 if self.block_dv <= 128 else 32

    def _arg(self, name, tensor, block, cols):
        if not self.use_tma:
            return tensor
        factory = self.descriptors.get((name, block))
        if factory is None:
            factory = self.descriptors[(name, block)] = DescriptorFactory(tensor, [1, 1, block, cols])
        return factory(tensor)

    def run(self, do, q, k, v, out, lse, dq, dk, dv) -> None:
        problem, config = self.problem, self.config
        rows = problem.batch * problem.q_heads
        delta = torch.empty((rows, problem.q_len), dtype=torch.float32, device=q.device)
        lse2 = torch.empty((rows, problem.q_len), dtype=torch.float32, device=q.device)
        d, dvb = self.block_d, self.block_dv
        arg = self._arg
        dq_acc = None
        if config.one_launch and not config.dq_atomic:
            bm, bn, bmq, bnq = config.BLOCK_M, config.BLOCK_N, config.BLOCK_M_DQ, config.BLOCK_N_DQ
            main = (arg("q", q, bm, d), arg("k", k, bn, d), arg("v", v, bn, dvb), arg("do", do, bm, dvb),
                    arg("q", q, bmq, d), arg("k", k, bnq, d), arg("v", v, bnq, dvb),
                    arg("do", do, bmq, dvb), arg("dk", dk, bn, d), arg("dv", dv, bn, dvb),
                    arg("dq", dq, bmq, d), lse2, delta)
            rest = ()
        else:
            bm, bn = config.BLOCK_M, config.BLOCK_N
            if config.dq_atomic:
                dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
                dq_target = arg("dq_acc", dq_acc, bm, d) if self.dq_tma else dq_acc
            else:
                dq_target = dq
            main = (arg("q", q, bm, d), arg("k", k, bn, d), arg("v", v, bn, dvb), arg("do", do, bm, dvb),
                    arg("dk", dk, bn, d), arg("dv", dv, bn, dvb), dq_target, lse2, delta)
            if dq_acc is None:
                bmq, bnq = config.BLOCK_M_DQ, config.BLOCK_N_DQ
                rest = (arg("q", q, bmq, d), arg("k", k, bnq, d), arg("v", v, bnq, dvb),
                        arg("do", do, bmq, dvb), arg("dq", dq, bmq, d), lse2, delta)
            else:
                rest = None
        pre = (out, do, lse, delta, lse2)
        launches = self.launches
        if launches is None:
            launches = self.launches = self._make_launches(do, q, k, v, out, dq, dk, dv, pre, main,
                                                           rest, dq_acc if rest is None else None)
        launches[0](*pre)
        launches[1](*main)
        if rest is None:
            dq.copy_(dq_acc)
        elif rest:
            launches[2](*rest)

    def _make_launches(self, do, q, k, v, out, dq, dk, dv, pre, main, rest, dq_acc) -> list:
        if interpreting():
            patch_interpreter()
        problem, config = self.problem, self.config
        rows = problem.batch * problem.q_heads
        has_window, left, right = window_args(problem.window)
        common = dict(IS_CAUSAL=problem.causal, HAS_WINDOW=has_window, USE_TMA=self.use_tma,
                      DOT_FP32=interpreter_needs_fp32_dots(problem.dtype), IO_DTYPE=io_dtype(q),
                      BLOCK_D=self.block_d, BLOCK_DV=self.block_dv,
                      num_warps=config.num_warps, num_stages=config.num_stages)
        scale, qk_scale = self.scale, self.scale * LOG2_E
        launches = [TritonLaunch(
            _backward_preprocess, (triton.cdiv(problem.q_len, self.pre_block), rows), *pre,
            *out.stride(), *do.stride(), problem.q_heads, problem.q_len, problem.v_head_dim,
            BLOCK_M=self.pre_block, BLOCK_DV=self.block_dv, num_warps=4)]
        if config.one_launch and not config.dq_atomic:
            bm, bn, bmq, bnq = config.BLOCK_M, config.BLOCK_N, config.BLOCK_M_DQ, config.BLOCK_N_DQ
            num_key_tiles = triton.cdiv(problem.kv_len, bn)
            num_m_tiles = triton.cdiv(problem.q_len, bmq)
            dkdv_programs = num_key_tiles * problem.batch * problem.kv_heads
            launches.append(TritonLaunch(
                _flash_backward_one_launch, (dkdv_programs + num_m_tiles * rows,), *main,
                *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
                *dq.stride(),
                problem.q_heads, problem.kv_heads, problem.group_size, problem.q_len, problem.kv_len,
                problem.head_dim, problem.v_head_dim, scale, qk_scale, left, right,
                num_key_tiles, num_m_tiles, dkdv_programs,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_M_DQ=bmq, BLOCK_N_DQ=bnq,
                on_compile=lambda c: remember_launch("attention-bwd-one-launch", c), **common))
            return launches
        bm, bn = config.BLOCK_M, config.BLOCK_N
        dq_strides = (dq_acc if dq_acc is not None else dq).stride()
        launches.append(TritonLaunch(
            _flash_backward_dkdv, (triton.cdiv(problem.kv_len, bn), problem.batch * problem.kv_heads),
            *main, *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
            *dq_strides,
            problem.q_heads, problem.kv_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, scale, qk_scale, left, right,
            DQ_ATOMIC=config.dq_atomic, DQ_TMA=self.dq_tma, BLOCK_M=bm, BLOCK_N=bn,
            on_compile=lambda c: remember_launch("attention-bwd-dkdv", c), **common))
        if rest:
            bm, bn = config.BLOCK_M_DQ, config.BLOCK_N_DQ
            num_m_tiles = triton.cdiv(problem.q_len, bm)
            launches.append(TritonLaunch(
                _flash_backward_dq, (num_m_tiles, rows), *rest,
                *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
                problem.q_heads, problem.group_size, problem.q_len, problem.kv_len,
                problem.head_dim, problem.v_head_dim, scale, qk_scale, left, right, num_m_tiles,
                BLOCK_M=bm, BLOCK_N=bn,
                on_compile=lambda c: remember_launch("attention-bwd-dq", c), **common))
        return launches


PLANS = plan_cache("attention-bwd")


def _check_backward_tensors(problem, q, out, do, lse) -> None:
    expected_out = (problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim)
    for name, tensor, shape, dtype in (("out", out, expected_out, q.dtype),
                                       ("grad_out", do, expected_out, q.dtype),
                                       ("lse", lse, expected_out[:3], torch.float32)):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape \
                or tensor.dtype != dtype or tensor.device != q.device:
            got = (f"{tuple(tensor.shape)} {tensor.dtype} on {tensor.device}"
                   if isinstance(tensor, torch.Tensor) else type(tensor).__name__)
            raise ShapeError(f"attention-bwd: {name} must be {shape} {dtype} on {q.device}, "
                             f"got {got}")


def backward_plan(do, q, k, v, out, lse, causal=False, window=None, scale=None, config=None,
                  grads=(None, None, None)) -> BackwardPlan:
    """The cached plan for these tensors and options (checked and resolved on first use)."""
    key, plan = PLANS.find(lambda: (
        tensor_key(do), tensor_key(q), tensor_key(k), tensor_key(v), tensor_key(out),
        tensor_key(lse), causal, window, scale, config,
        tuple(None if g is None else tensor_key(g) for g in grads)))
    if plan is not None:
        return plan
    problem = check_attention_inputs(q, k, v, kernel="attention-bwd", causal=causal,
                                     window=window, scale=scale)
    config = resolve_config("attention-bwd", config, problem, q.device)
    _check_backward_tensors(problem, q, out, do, lse)
    for name, grad, like in zip(("dq", "dk", "dv"), grads, (q, k, v)):
        if grad is not None:
            _check_like(name, grad, like)
    like = [torch.empty_like(t, memory_format=torch.contiguous_format) if g is None else g
            for g, t in zip(grads, (q, k, v))]
    plan = BackwardPlan(problem, config, scale,
                        bool(config.tma) and tma_compatible(q, k, v, do, *like)
                        and (interpreting() or problem.backward_flops() >= TMA_MIN_FLOPS))
    return PLANS.store(key, plan)


def flash_backward(do, q, k, v, out, lse, *, causal: bool = False, window=None,
                   scale: float | None = None, config: FlashBackwardConfig | None = None,
                   dq=None, dk=None, dv=None):
    """Gradients (dq, dk, dv) of flash_forward's output, given its out and lse and dO = dL/dout.
    Any strides; `dq`/`dk`/`dv` may be given (tests poison them)."""
    if window is not None and not isinstance(window, tuple) and isinstance(window, list):
        window = tuple(window)
    plan = backward_plan(do, q, k, v, out, lse, causal, window, scale, config, (dq, dk, dv))
    if not lse.is_contiguous():
        lse = lse.contiguous()
    # torch.empty, not empty_like: inputs that require grad would route empty_like through autograd
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device) if dq is None else dq
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device) if dk is None else dk
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device) if dv is None else dv
    plan.run(do, q, k, v, out, lse, dq, dk, dv)
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """out, lse = attention(q, k, v); backward gives dq, dk, dv through flash_backward."""

    @staticmethod
    def forward(ctx, q, k, v, causal, window, scale, config, backward_config):
        out, lse = flash_forward(q, k, v, causal=causal, window=window, scale=scale, config=config)
        ctx.set_materialize_grads(False)  # lse gets no gradient: no zeros allocated for it
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = (causal, window, scale, backward_config)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        if grad_out is None:  # only lse was used
            return None, None, None, None, None, None, None, None
        q, k, v, out, lse = ctx.saved_tensors
        causal, window, scale, backward_config = ctx.options
        # A broadcast gradient (e.g. of out.sum()) has zero strides: materialise it.
        grad_out = grad_out.contiguous()
        dq, dk, dv = flash_backward(grad_out, q, k, v, out, lse, causal=causal, window=window,
                                    scale=scale, config=backward_config)
        return dq, dk, dv, None, None, None, None, None


def launch_from_inputs(config: FlashBackwardConfig, inputs: dict):
    """The registry's launcher: the backward alone, for inputs from KernelSpec.make_inputs
    (the forward runs once, on first call, with its default config; its out/lse are kept)."""
    if "out" not in inputs:
        out, lse = flash_forward(inputs["q"].detach(), inputs["k"].detach(), inputs["v"].detach(),
                                 causal=inputs.get("causal", False), window=inputs.get("window"),
                                 scale=inputs.get("scale"),
                                 config=inputs.get("forward_config"))
        inputs["out"], inputs["lse"] = out, lse
    return flash_backward(inputs["do"], inputs["q"].detach(), inputs["k"].detach(),
                          inputs["v"].detach(), inputs["out"], inputs["lse"],
                          causal=inputs.get("causal", False), window=inputs.get("window"),
                          scale=inputs.get("scale"), config=config)


__all__ = ["BackwardPlan", "FlashAttentionFunction", "backward_plan", "flash_backward",
           "launch_from_inputs", "FlashConfig"]
