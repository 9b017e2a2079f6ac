"""Operations counted by dependence (docs/simulator.md §3.4): an operation whose operands read
only some of an Einsum's iteration ranks runs once per point of those ranks, in the IR's counts,
the spatial model's work and the GPU model's tile work. Expected counts are written by hand."""

from __future__ import annotations

import pytest

from einsim.einsum_cascades import load_cascade
from einsim.einsum_cascades.loader import parse_cascade
from einsim.problem import Problem
from einsim.simulator.simulate import simulate

B, H, N, D = 2, 4, 256, 16


def test_a_per_head_decay_is_counted_once_per_head():
    cascade = load_cascade("linear-attention-decay-recurrent")
    sizes = cascade.bind({"batch": B, "heads": H, "seq_len": N, "head_dim": D, "v_head_dim": D})
    update = cascade.einsum("KV")
    counts = update.operation_counts(sizes)
    state_points = B * H * N * D * D
    # exp(-SLOPE[h]): a sign flip and an exp per head; the decay product, K*V and the add per point
    assert counts == {"sub": H, "exp": H, "mul": 2 * state_points, "add": state_points}
    assert update.operations_per_point(sizes)["exp"] == pytest.approx(H / state_points)
    assert update.operations_per_point() == {"mul": 2, "sub": 1, "exp": 1, "add": 1}  # per point, as written


def test_alibis_row_offset_and_slope_product_follow_their_ranks_under_the_causal_filter():
    cascade = load_cascade("alibi")
    sizes = cascade.bind({"batch": B, "heads": H, "q_len": N, "kv_len": N})
    score = cascade.einsum("S")  # QK - SLOPE[h] * (p + M - P - m), causal
    pairs = N * (N + 1) // 2
    counts = score.operation_counts(sizes)
    assert counts["add"] == N  # p + M: one per query row that sees a key
    assert counts["sub"] == N + pairs + B * H * pairs  # - P per row, - m per visible pair, QK - ... per point
    assert counts["mul"] == H * pairs  # SLOPE[h] * (...): per head and visible pair, not per batch element


def test_paper_cascades_read_every_rank_in_every_operation():
    for name in ("fusemax", "flat", "attention-1pass", "attention-2pass", "attention-3pass"):
        cascade = load_cascade(name)
        for einsum in cascade.einsums:
            for kind, ranks in einsum.operation_ranks():
                assert ranks >= set(einsum.iteration_ranks), (name, einsum.output, kind)


def test_the_spatial_model_prices_a_hoisted_exp_by_its_own_count():
    per_point = parse_cascade("""
name: decay-per-point
ranks: {B: batch, H: heads, E: head_dim, F: v_head_dim, M: seq_len, P: seq_len}
symbols: {batch: 1, heads: 1, head_dim: 64, v_head_dim: 64}
inputs: {Q: [B, H, E, P], K: [B, H, E, M], V: [B, H, F, M], SLOPE: [B, H, E, F, M]}
init: {KV: 0}
einsums:
  - KV[b,h,m+1,e,f]   = exp(-SLOPE[b,h,e,f,m]) * KV[b,h,m,e,f] + K[b,h,e,m] * V[b,h,f,m]
  - O[b,h,f,p]        = Q[b,h,e,p] * KV[b,h,m+1,e,f] where m == p
outputs: [O]
""")
    problem = Problem(batch=1, q_heads=2, q_len=1024, kv_len=1024, head_dim=64)
    hoisted = simulate("linear-attention-decay-recurrent", problem, "fusemax-cloud")
    everywhere = simulate(per_point, problem, "fusemax-cloud")
    assert hoisted.compute_ops["exp"] == pytest.approx(2)  # one per head
    assert everywhere.compute_ops["exp"] == pytest.approx(2 * 1024 * 64 * 64)
    assert hoisted.energy_j < everywhere.energy_j
