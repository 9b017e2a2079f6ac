"""The GPU cost model of the chunked linear-attention kernels (simulator/gpu_cost/linear.py):
linear cascades are recognised (softmax ones are not, though a decayed score is an exp over M and
P too), the simulator's default walk is the kernels' default config, and the predictions behave
as the algorithm does: forward time at a fixed token count barely moves with N while softmax
grows with it, the backward costs more than the forward, a decode step moves the state twice."""

from __future__ import annotations

import pytest

from einsim.autotune.predict import predict_kernel
from einsim.einsum_cascades import library_names, load_cascade
from einsim.kernels.registry import KERNELS
from einsim.problem import Problem
from einsim.simulator.gpu_cost import kernel_cost
from einsim.simulator.gpu_cost.linear import has_decay, is_chunked_linear, is_recurrent_linear, linear_tiles
from einsim.simulator.gpu_cost.mapping import GpuMapping
from einsim.targets import load_target

LINEAR = {"linear-attention", "linear-attention-recurrent", "linear-attention-identity",
          "linear-attention-identity-recurrent", "linear-attention-decay", "linear-attention-decay-recurrent"}


@pytest.fixture(scope="module")
def h200():
    return load_target("h200")


def tokens(length: int, total: int = 65536) -> Problem:
    return Problem(batch=max(1, total // length), q_heads=16, q_len=length, kv_len=length, head_dim=128, causal=True)


def test_linear_cascades_and_only_they_are_recognised():
    found = {name for name in library_names()
             if is_chunked_linear(load_cascade(name)) or is_recurrent_linear(load_cascade(name))}
    assert found == LINEAR
    assert {name for name in LINEAR if has_decay(load_cascade(name))} == {
        "linear-attention-decay", "linear-attention-decay-recurrent"}


@pytest.mark.parametrize("problem", [tokens(2048), tokens(65536), Problem(batch=3, q_heads=4, kv_heads=2, q_len=999,
                                                                          kv_len=999, head_dim=64, causal=True)])
def test_the_simulators_default_walk_is_the_kernels_default_config(problem):
    config = KERNELS["linear-fwd"].default_config(problem)
    tiles = linear_tiles(GpuMapping(), problem, problem.v_head_dim)
    assert (tiles.chunk, tiles.block_c, tiles.segment, tiles.num_warps, tiles.num_stages) == (
        config.CHUNK, config.BLOCK_C, config.SEGMENT, config.num_warps, config.num_stages)


def test_linear_time_barely_moves_with_n_at_fixed_tokens_while_softmax_grows(h200):
    linear = load_cascade("linear-attention-decay")
    softmax = load_cascade("attention-causal")
    times = {n: kernel_cost(linear, tokens(n), h200).time_s for n in (2048, 65536)}
    assert times[65536] < 2.5 * times[2048]
    soft = {n: kernel_cost(softmax, tokens(n), h200, {"kernel_style": "einsim"}).time_s for n in (2048, 65536)}
    assert soft[65536] > 15 * soft[2048]
    assert times[65536] < soft[65536] / 20
    backward = kernel_cost(linear, tokens(65536), h200, direction="backward").time_s
    assert times[65536] < backward < 5 * times[65536]


def test_autotune_predictions_rank_linear_configs_and_reject_what_cannot_fit(h200):
    problem = tokens(65536)
    spec = KERNELS["linear-fwd"]
    fits = predict_kernel("linear-fwd", spec.default_config(problem), problem, h200)
    assert fits.fits and 0 < fits.time_s < 1e-2 and fits.programs >= 256  # LINEAR_TARGET_PROGRAMS
    too_big = spec.config_type(CHUNK=128, BLOCK_C=128, num_warps=16, num_stages=4)
    assert not predict_kernel("linear-fwd", too_big, problem, h200).fits
    backward = predict_kernel("linear-bwd", KERNELS["linear-bwd"].default_config(problem), problem, h200)
    assert backward.fits and backward.time_s > fits.time_s


def test_a_decode_step_moves_the_state_twice(h200):
    problem = Problem(batch=64, q_heads=16, q_len=1, kv_len=1, head_dim=128)
    cost = predict_kernel("linear-decode", KERNELS["linear-decode"].default_config(problem), problem, h200)
    state = 4 * 64 * 16 * 128 * 128
    assert cost.fits and cost.hbm_bytes >= 2 * state
    assert cost.time_s >= 2 * state / (5e12)


def test_a_walk_waits_for_its_chunk_chain_and_programs_sharing_an_sm_overlap_theirs(h200, monkeypatch):
    """Each chunk step of a walk program waits for the state's dependent chain
    (WALK_STEP_LATENCY_S): with one 8-warp program per SM the walk takes at least its chunk steps
    per SM times that latency; two 4-warp programs per SM overlap their chains (about half)."""
    from einsim.simulator.gpu_cost import linear as model

    monkeypatch.setattr(model, "WALK_STEP_LATENCY_S", 20e-6)  # far above any throughput time
    cascade, problem = load_cascade("linear-attention-identity"), tokens(65536)
    eight = kernel_cost(cascade, problem, h200, {"num_warps": 8, "num_stages": 2, "segment": 4096}).time_s
    four = kernel_cost(cascade, problem, h200, {"num_warps": 4, "num_stages": 2, "segment": 4096}).time_s
    programs = 2 * 16 * 16  # column blocks x segments x heads, 64 chunks each
    steps_per_sm = -(-programs // 132) * 64  # the H200's 132 SMs, one 8-warp program each
    assert eight >= 0.95 * steps_per_sm * 20e-6
    assert 0.4 < four / eight < 0.65


def test_the_walk_constants_reproduce_the_h200_measurements(h200):
    """WALK_MMA_EFFICIENCY and WALK_STEP_LATENCY_S as fitted (benchmarks/fit_linear_walk.py) on
    W4's H200 measurements: mean |error| of the fitted rows and of the held-out N=2048 rows as
    docs/linear-attention.md reports them (a change to the model that makes them worse fails)."""
    import math
    import sys
    from pathlib import Path

    from einsim.simulator.gpu_cost import linear as model

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    import fit_linear_walk

    assert (model.WALK_MMA_EFFICIENCY, model.WALK_STEP_LATENCY_S) == (0.203, 1.13e-6)
    rows = [r for r in fit_linear_walk.read_rows([root / "benchmarks/data/h200_linear_w4.csv"])
            if r["config"].BLOCK_C <= 64]
    held = [r for r in rows if r["problem"].q_len in fit_linear_walk.HELD_OUT_LENGTHS]
    fitted = [r for r in rows if r not in held]
    params = (model.WALK_MMA_EFFICIENCY, model.WALK_STEP_LATENCY_S)

    def mean_error(group):
        return sum(abs(math.exp(e) - 1) for e in fit_linear_walk.errors_at(params, group, h200)) / len(group)

    assert len(fitted) == 60 and len(held) == 2
    assert mean_error(fitted) < 0.11  # 10.5 %
    assert mean_error(held) < 0.04  # 2.9 %
