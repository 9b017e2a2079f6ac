"""The 2-pass forward kernel: the library's `attention-2pass` cascade on the GPU, one launch per
pass, in either of the two mappings the simulator models (docs/kernels.md § Multi-pass).

The cascade: pass 1 walks the key tiles m1 computing each tile's local max LM, numerators SLN =
exp(QK - LM), local sum SLD, local numerator times V SLNV, and the global max GM; pass 2 corrects
every tile by C = exp(LM - GM): SD = Σ C·SLD, SNV = Σ C·SLNV, AV = SNV / SD. LM, SLD and SLNV
grow with M (one per tile) and live across the pass boundary:

- MATERIALIZE=True: pass 1 reads Q, K, V and writes LM, SLD, SLNV (fp32, per visited tile) and
  GM; pass 2 reads them back (no Q, K or V) and writes AV and lse.
- MATERIALIZE=False (recompute): pass 1 reads Q, K and writes GM only; pass 2 reads Q, K, V and
  GM, recomputes LM, SLN, SLD, SLNV per tile and applies the correction.
GM is O(P) and goes through HBM between the launches in both mappings.
"""

from __future__ import annotations

import triton
import triton.language as tl

from einsim.kernels.launch import TritonLaunch
from einsim.kernels import runtime
from einsim.kernels.multipass import tiles
from einsim.kernels.multipass.config import padded_dims
from einsim.kernels.multipass.tiles import LN_2


@triton.jit
def _two_pass_first(
    Q, K, V, GM, LM, SLD, SLNV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    q_heads, group, q_len, kv_len, head_dim, v_head_dim, num_key_tiles, scale_log2,
    window_left, window_right,
    MATERIALIZE: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_bh, batch, head, start_m, rows = tiles.program_tile(q_heads, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < q_len
    q = tiles.load_q(tiles.head_slice(Q, batch, head, stride_qb, stride_qh), rows, offs_d, stride_qm, stride_qd,
                     q_len, head_dim)
    k_base = tiles.head_slice(K, batch, head // group, stride_kb, stride_kh)
    v_base = tiles.head_slice(V, batch, head // group, stride_vb, stride_vh)
    stats = pid_bh * num_key_tiles * q_len + rows

    lo, hi = tiles.key_range(start_m, q_len, kv_len, window_left, window_right,
                             IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    gm = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        qk = tiles.tile_scores(q, k_base, rows, cols, offs_d, stride_kn, stride_kd,
                               q_len, kv_len, head_dim, scale_log2, window_left, window_right,
                               IS_CAUSAL, HAS_WINDOW, DOT_FP32)
        lm = tl.max(qk, 1)
        gm = tl.maximum(gm, lm)
        if MATERIALIZE:
            lm_safe = tl.where(lm == float("-inf"), 0.0, lm)
            sln = tl.exp2(qk - lm_safe[:, None])
            v = tiles.load_v(v_base, cols, offs_dv, stride_vn, stride_vd, kv_len, v_head_dim)
            slnv = tiles.dot_pv(sln, v, tl.zeros([BLOCK_M, BLOCK_DV], tl.float32), DOT_FP32)
            tile = stats + (start_n // BLOCK_N) * q_len
            tl.store(LM + tile, lm, mask=row_ok)
            tl.store(SLD + tile, tl.sum(sln, 1), mask=row_ok)
            tl.store(SLNV + tile[:, None] * v_head_dim + offs_dv[None, :], slnv,
                     mask=row_ok[:, None] & (offs_dv[None, :] < v_head_dim))
    tl.store(GM + pid_bh * q_len + rows, gm, mask=row_ok)


@triton.jit
def _two_pass_second(
    Q, K, V, GM, LM, SLD, SLNV, Out, Lse,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    q_heads, group, q_len, kv_len, head_dim, v_head_dim, num_key_tiles, scale_log2,
    window_left, window_right,
    MATERIALIZE: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_bh, batch, head, start_m, rows = tiles.program_tile(q_heads, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < q_len
    dv_ok = offs_dv < v_head_dim
    stats = pid_bh * num_key_tiles * q_len + rows
    k_base = tiles.head_slice(K, batch, head // group, stride_kb, stride_kh)
    v_base = tiles.head_slice(V, batch, head // group, stride_vb, stride_vh)
    if not MATERIALIZE:
        q = tiles.load_q(tiles.head_slice(Q, batch, head, stride_qb, stride_qh), rows, offs_d, stride_qm,
                         stride_qd, q_len, head_dim)

    gm = tl.load(GM + pid_bh * q_len + rows, mask=row_ok, other=float("-inf"))
    gm_safe = tl.where(gm == float("-inf"), 0.0, gm)
    sd = tl.zeros([BLOCK_M], tl.float32)
    snv = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    lo, hi = tiles.key_range(start_m, q_len, kv_len, window_left, window_right,
                             IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        if MATERIALIZE:
            tile = stats + (start_n // BLOCK_N) * q_len
            lm = tl.load(LM + tile, mask=row_ok, other=float("-inf"))
            c = tl.exp2(lm - gm_safe)  # 0 where the tile row saw no key
            sd += c * tl.load(SLD + tile, mask=row_ok, other=0.0)
            slnv = tl.load(SLNV + tile[:, None] * v_head_dim + offs_dv[None, :],
                           mask=row_ok[:, None] & dv_ok[None, :], other=0.0)
            snv += c[:, None] * slnv
        else:
            cols = start_n + offs_n
            qk = tiles.tile_scores(q, k_base, rows, cols, offs_d, stride_kn, stride_kd,
                                   q_len, kv_len, head_dim, scale_log2, window_left, window_right,
                                   IS_CAUSAL, HAS_WINDOW, DOT_FP32)
            lm = tl.max(qk, 1)
            lm_safe = tl.where(lm == float("-inf"), 0.0, lm)
            sln = tl.exp2(qk - lm_safe[:, None])
            c = tl.exp2(lm - gm_safe)
            sd += c * tl.sum(sln, 1)
            v = tiles.load_v(v_base, cols, offs_dv, stride_vn, stride_vd, kv_len, v_head_dim)
            snv = tiles.dot_pv(sln * c[:, None], v, snv, DOT_FP32)

    empty = sd == 0.0
    out = snv / tl.where(empty, 1.0, sd)[:, None]
    lse = tl.where(empty, float("-inf"), (gm_safe + tl.log2(tl.where(empty, 1.0, sd))) * LN_2)
    tiles.store_rows(Out, Lse, out, lse, pid_bh, batch, head, rows, offs_dv, stride_ob, stride_oh, stride_om,
                     stride_od, q_len, v_head_dim)


def run(plan, q, k, v):
    """Both passes of the 2-pass kernel for a MultipassPlan on checked inputs: (out, lse)."""
    problem, config = plan.problem, plan.config
    b, hq, nq, nk = problem.batch, problem.q_heads, problem.q_len, problem.kv_len
    num_key_tiles = triton.cdiv(nk, config.BLOCK_N)
    gm = runtime.scratch((b * hq, nq), q.device)
    if config.MATERIALIZE:
        lm = runtime.scratch((b * hq, num_key_tiles, nq), q.device)
        sld = runtime.scratch((b * hq, num_key_tiles, nq), q.device)
        slnv = runtime.scratch((b * hq, num_key_tiles, nq, problem.v_head_dim), q.device)
    else:
        lm = sld = slnv = gm  # never touched
    out = runtime.empty_output((b, hq, nq, problem.v_head_dim), q.device, q.dtype)
    lse = runtime.empty_output((b, hq, nq), q.device)
    first_args = (q, k, v, gm, lm, sld, slnv)
    second_args = (q, k, v, gm, lm, sld, slnv, out, lse)
    if plan.launches is None:
        grid, scale_log2, left, right, common = tiles.launch_constants(plan, problem, config)
        common["BLOCK_DV"] = padded_dims(problem)[1]
        sizes = (hq, problem.group_size, nq, nk, problem.head_dim, problem.v_head_dim, num_key_tiles,
                 scale_log2, left, right)
        plan.launches = (
            TritonLaunch(_two_pass_first, grid, *first_args, *q.stride(), *k.stride(), *v.stride(),
                         *sizes, **common),
            TritonLaunch(_two_pass_second, grid, *second_args, *q.stride(), *k.stride(),
                         *v.stride(), *out.stride(), *sizes, **common))
    plan.launches[0](*first_args)
    plan.launches[1](*second_args)
    return out, lse
