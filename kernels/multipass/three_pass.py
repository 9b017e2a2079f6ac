"""The 3-pass forward kernel: the `attention-3pass` cascade (softmax as usually written) run on
the GPU, one launch per pass, the row statistics going through HBM (docs/kernels.md § Multi-pass).

Pass 1: QK = Q·K, GM[p] = max over m of QK. Pass 2: SN = exp(QK - GM), SD[p] = Σ SN.
Pass 3: A = SN / SD, AV = A·V, lse = GM + log SD. GM and SD (O(P), fp32) go through HBM between
the launches. QK and SN grow with M and live across the pass boundaries, in either of the two
mappings the simulator models:

- MATERIALIZE=False (recompute): QK never reaches HBM; passes 2 and 3 re-read Q and K and
  recompute it (pass 3 also SN). Traffic: K three times, V once.
- MATERIALIZE=True: pass 1 writes QK (fp32, visited tiles only) to HBM; pass 2 reads it and
  overwrites it in place with SN; pass 3 reads SN and V. Q and K are read once, in pass 1.
"""

from __future__ import annotations

import triton
import triton.language as tl

from einsim.kernels.launch import TritonLaunch
from einsim.kernels import runtime
from einsim.kernels.multipass import tiles
from einsim.kernels.multipass.config import padded_dims
from einsim.kernels.multipass.tiles import LN_2

# Which statistics pass a launch of _three_pass_statistics runs.
ROW_MAX = 1
ROW_SUM = 2


@triton.jit
def _three_pass_statistics(
    Q, K, GM, SD, S,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    q_heads, group, q_len, kv_len, head_dim, scale_log2, window_left, window_right,
    PASS: tl.constexpr, MATERIALIZE: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """PASS == 1: GM = max QK (and QK to S). PASS == 2: SD = Σ exp(QK - GM) (and SN over S)."""
    pid_bh, batch, head, start_m, rows = tiles.program_tile(q_heads, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < q_len
    if PASS == 1 or not MATERIALIZE:
        q = tiles.load_q(tiles.head_slice(Q, batch, head, stride_qb, stride_qh), rows, offs_d, stride_qm,
                         stride_qd, q_len, head_dim)
    k_base = tiles.head_slice(K, batch, head // group, stride_kb, stride_kh)
    s_rows = S + (pid_bh * q_len + rows[:, None]) * kv_len
    lo, hi = tiles.key_range(start_m, q_len, kv_len, window_left, window_right,
                             IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    if PASS == 1:
        gm = tl.full([BLOCK_M], float("-inf"), tl.float32)
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            qk = tiles.tile_scores(q, k_base, rows, cols, offs_d, stride_kn, stride_kd,
                                   q_len, kv_len, head_dim, scale_log2, window_left, window_right,
                                   IS_CAUSAL, HAS_WINDOW, DOT_FP32)
            gm = tl.maximum(gm, tl.max(qk, 1))
            if MATERIALIZE:
                tl.store(s_rows + cols[None, :], qk, mask=row_ok[:, None] & (cols[None, :] < kv_len))
        tl.store(GM + pid_bh * q_len + rows, gm, mask=row_ok)
    else:
        gm = tl.load(GM + pid_bh * q_len + rows, mask=row_ok, other=float("-inf"))
        gm_safe = tl.where(gm == float("-inf"), 0.0, gm)
        sd = tl.zeros([BLOCK_M], tl.float32)
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            if MATERIALIZE:
                in_s = row_ok[:, None] & (cols[None, :] < kv_len)
                qk = tl.load(s_rows + cols[None, :], mask=in_s, other=float("-inf"))
            else:
                qk = tiles.tile_scores(q, k_base, rows, cols, offs_d, stride_kn, stride_kd,
                                       q_len, kv_len, head_dim, scale_log2, window_left,
                                       window_right, IS_CAUSAL, HAS_WINDOW, DOT_FP32)
            sn = tl.exp2(qk - gm_safe[:, None])
            sd += tl.sum(sn, 1)
            if MATERIALIZE:
                tl.store(s_rows + cols[None, :], sn, mask=in_s)
        tl.store(SD + pid_bh * q_len + rows, sd, mask=row_ok)


@triton.jit
def _three_pass_output(
    Q, K, V, GM, SD, S, Out, Lse,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    q_heads, group, q_len, kv_len, head_dim, v_head_dim, scale_log2, window_left, window_right,
    MATERIALIZE: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_bh, batch, head, start_m, rows = tiles.program_tile(q_heads, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = rows < q_len
    if not MATERIALIZE:
        q = tiles.load_q(tiles.head_slice(Q, batch, head, stride_qb, stride_qh), rows, offs_d, stride_qm,
                         stride_qd, q_len, head_dim)
    k_base = tiles.head_slice(K, batch, head // group, stride_kb, stride_kh)
    v_base = tiles.head_slice(V, batch, head // group, stride_vb, stride_vh)
    s_rows = S + (pid_bh * q_len + rows[:, None]) * kv_len
    gm = tl.load(GM + pid_bh * q_len + rows, mask=row_ok, other=float("-inf"))
    sd = tl.load(SD + pid_bh * q_len + rows, mask=row_ok, other=0.0)
    gm_safe = tl.where(gm == float("-inf"), 0.0, gm)
    empty = sd == 0.0
    sd_safe = tl.where(empty, 1.0, sd)
    av = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    lo, hi = tiles.key_range(start_m, q_len, kv_len, window_left, window_right,
                             IS_CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MATERIALIZE:
            sn = tl.load(s_rows + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < kv_len),
                         other=0.0)
        else:
            qk = tiles.tile_scores(q, k_base, rows, cols, offs_d, stride_kn, stride_kd,
                                   q_len, kv_len, head_dim, scale_log2, window_left, window_right,
                                   IS_CAUSAL, HAS_WINDOW, DOT_FP32)
            sn = tl.exp2(qk - gm_safe[:, None])
        a = sn / sd_safe[:, None]  # the cascade divides before A·V
        v = tiles.load_v(v_base, cols, offs_dv, stride_vn, stride_vd, kv_len, v_head_dim)
        av = tiles.dot_pv(a, v, av, DOT_FP32)
    lse = tl.where(empty, float("-inf"), (gm_safe + tl.log2(sd_safe)) * LN_2)
    tiles.store_rows(Out, Lse, av, lse, pid_bh, batch, head, rows, offs_dv, stride_ob, stride_oh, stride_om,
                     stride_od, q_len, v_head_dim)


def run(plan, q, k, v):
    """The three passes of the 3-pass kernel for a MultipassPlan on checked inputs: (out, lse)."""
    problem, config = plan.problem, plan.config
    b, hq, nq, nk = problem.batch, problem.q_heads, problem.q_len, problem.kv_len
    gm = runtime.scratch((b * hq, nq), q.device)
    sd = runtime.scratch((b * hq, nq), q.device)
    # QK, then SN in place; only visited tiles are written and read.
    scores = runtime.scratch((b * hq, nq, nk), q.device) if config.MATERIALIZE else gm
    out = runtime.empty_output((b, hq, nq, problem.v_head_dim), q.device, q.dtype)
    lse = runtime.empty_output((b, hq, nq), q.device)
    statistics_args = (q, k, gm, sd, scores)
    output_args = (q, k, v, gm, sd, scores, out, lse)
    if plan.launches is None:
        grid, scale_log2, left, right, common = tiles.launch_constants(plan, problem, config)
        plan.launches = tuple(
            TritonLaunch(_three_pass_statistics, grid, *statistics_args, *q.stride(), *k.stride(),
                         hq, problem.group_size, nq, nk, problem.head_dim, scale_log2, left, right,
                         PASS=which, **common)
            for which in (ROW_MAX, ROW_SUM)) + (
            TritonLaunch(_three_pass_output, grid, *output_args, *q.stride(), *k.stride(),
                         *v.stride(), *out.stride(), hq, problem.group_size, nq, nk, problem.head_dim,
                         problem.v_head_dim, scale_log2, left, right, BLOCK_DV=padded_dims(problem)[1],
                         **common),)
    plan.launches[0](*statistics_args)
    plan.launches[1](*statistics_args)
    plan.launches[2](*output_args)
    return out, lse
