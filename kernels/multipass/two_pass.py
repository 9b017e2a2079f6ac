"""The 2-pass forward kernel: the `attention-2pass` cascade run on the GPU, with its statistics
going through HBM between the passes exactly as the cascade says (docs/kernels.md § Multi-pass).

Pass 1 (one program per query tile and query head) walks the key tiles m1: BQK = Q·K_m1, the
local max LM[m1, p], the local sum SLD[m1, p] = Σ exp(BQK - LM), both written to HBM per tile,
and the global max GM[p] = max over m1 of LM, written at the end. Pass 2 reads GM and, per key
tile, LM and SLD back, recomputes BQK from K, corrects the tile's numerator and denominator by
PRM = exp(LM - GM), accumulates SD = Σ PRM·SLD and SNV = Σ PRM·exp(BQK - LM)·V, and writes
AV = SNV / SD and lse = GM + log SD.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

from einsim.kernels.multipass import inputs, tiles
from einsim.kernels.multipass.config import MultipassConfig, padded_dims
from einsim.kernels.multipass.tiles import LN_2, LOG2_E


@triton.jit
def _two_pass_statistics(
    Q, K, LM, SLD, GM,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    q_heads, group, q_len, kv_len, head_dim, num_key_tiles, scale_log2, window_left, window_right,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)  # 64-bit batch and head offsets
    batch = pid_bh // q_heads
    head = pid_bh % q_heads
    start_m = pid_m * BLOCK_M
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = tiles.load_q(Q + batch * stride_qb + head * stride_qh, rows, offs_d, stride_qm, stride_qd,
                     q_len, head_dim)
    k_base = K + batch * stride_kb + (head // group) * stride_kh
    row_ok = rows < q_len
    stats = pid_bh * num_key_tiles * q_len + rows

    lo, hi = tiles.key_range(start_m, q_len, kv_len, window_left, window_right,
                             IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    gm = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        qk = tiles.tile_scores(q, k_base, rows, start_n + offs_n, offs_d, stride_kn, stride_kd,
                               q_len, kv_len, head_dim, scale_log2, window_left, window_right,
                               IS_CAUSAL, HAS_WINDOW, DOT_FP32)
        lm = tl.max(qk, 1)
        lm_safe = tl.where(lm == float("-inf"), 0.0, lm)
        sld = tl.sum(tl.exp2(qk - lm_safe[:, None]), 1)
        tile = start_n // BLOCK_N
        tl.store(LM + stats + tile * q_len, lm, mask=row_ok)
        tl.store(SLD + stats + tile * q_len, sld, mask=row_ok)
        gm = tl.maximum(gm, lm)
    tl.store(GM + pid_bh * q_len + rows, gm, mask=row_ok)


@triton.jit
def _two_pass_output(
    Q, K, V, LM, SLD, GM, Out, Lse,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    q_heads, group, q_len, kv_len, head_dim, v_head_dim, num_key_tiles, scale_log2,
    window_left, window_right,
    IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)  # 64-bit batch and head offsets
    batch = pid_bh // q_heads
    head = pid_bh % q_heads
    start_m = pid_m * BLOCK_M
    rows = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tiles.load_q(Q + batch * stride_qb + head * stride_qh, rows, offs_d, stride_qm, stride_qd,
                     q_len, head_dim)
    k_base = K + batch * stride_kb + (head // group) * stride_kh
    v_base = V + batch * stride_vb + (head // group) * stride_vh
    row_ok = rows < q_len
    stats = pid_bh * num_key_tiles * q_len + rows

    gm = tl.load(GM + pid_bh * q_len + rows, mask=row_ok, other=float("-inf"))
    gm_safe = tl.where(gm == float("-inf"), 0.0, gm)
    sd = tl.zeros([BLOCK_M], tl.float32)
    snv = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    lo, hi = tiles.key_range(start_m, q_len, kv_len, window_left, window_right,
                             IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        tile = start_n // BLOCK_N
        lm = tl.load(LM + stats + tile * q_len, mask=row_ok, other=float("-inf"))
        sld = tl.load(SLD + stats + tile * q_len, mask=row_ok, other=0.0)
        qk = tiles.tile_scores(q, k_base, rows, cols, offs_d, stride_kn, stride_kd,
                               q_len, kv_len, head_dim, scale_log2, window_left, window_right,
                               IS_CAUSAL, HAS_WINDOW, DOT_FP32)
        lm_safe = tl.where(lm == float("-inf"), 0.0, lm)
        prm = tl.exp2(lm - gm_safe)  # the tile's correction to the global max; 0 for an empty tile row
        sd += prm * sld
        p = tl.exp2(qk - lm_safe[:, None]) * prm[:, None]
        v = tiles.load_v(v_base, cols, offs_dv, stride_vn, stride_vd, kv_len, v_head_dim)
        snv = tiles.dot_pv(p, v, snv, DOT_FP32)

    empty = sd == 0.0
    out = snv / tl.where(empty, 1.0, sd)[:, None]
    lse = tl.where(empty, float("-inf"), (gm_safe + tl.log2(tl.where(empty, 1.0, sd))) * LN_2)
    o_ptrs = Out + batch * stride_ob + head * stride_oh + rows[:, None] * stride_om + offs_dv[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dv[None, :] < v_head_dim))
    tl.store(Lse + pid_bh * q_len + rows, lse, mask=row_ok)


def launch(q, k, v, *, scale, config: MultipassConfig, problem, dot_fp32: bool):
    """Both passes of the 2-pass kernel on checked inputs. Returns (out, lse)."""
    block_d, block_dv = padded_dims(problem)
    b, hq, nq, nk = problem.batch, problem.q_heads, problem.q_len, problem.kv_len
    num_key_tiles = triton.cdiv(nk, config.BLOCK_N)
    stat_shape = (b * hq, num_key_tiles, nq)
    lm = inputs.scratch(stat_shape, q.device)
    sld = inputs.scratch(stat_shape, q.device)
    gm = inputs.scratch((b * hq, nq), q.device)
    out = inputs.empty_output((b, hq, nq, problem.value_dim), q.device, q.dtype)
    lse = inputs.empty_output((b, hq, nq), q.device)
    scale = 1.0 / math.sqrt(problem.head_dim) if scale is None else float(scale)
    left, right = problem.window or (0, 0)
    grid = (triton.cdiv(nq, config.BLOCK_M), b * hq)
    common = dict(IS_CAUSAL=problem.causal, HAS_WINDOW=problem.window is not None, DOT_FP32=dot_fp32,
                  BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N, BLOCK_D=block_d,
                  num_warps=config.num_warps, num_stages=config.num_stages)
    _two_pass_statistics[grid](
        q, k, lm, sld, gm, *q.stride(), *k.stride(),
        hq, problem.group, nq, nk, problem.head_dim, num_key_tiles, scale * LOG2_E, left, right,
        **common)
    _two_pass_output[grid](
        q, k, v, lm, sld, gm, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        hq, problem.group, nq, nk, problem.head_dim, problem.value_dim, num_key_tiles, scale * LOG2_E,
        left, right, BLOCK_DV=block_dv, **common)
    return out, lse

