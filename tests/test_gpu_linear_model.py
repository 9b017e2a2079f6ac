"""Chunked linear attention on a GPU is the chunked algorithm (simulator/gpu_cost/linear.py):
compulsory traffic, time linear in the sequence, the work of the cascade as written."""

from __future__ import annotations

import pytest

from einsim.einsum_cascades import load_cascade
from einsim.problem import Problem
from einsim.simulator.gpu_cost import kernel_cost
from einsim.simulator.simulate import simulate
from einsim.targets import load_target

H100 = load_target("h100-sxm")


def problem(n: int) -> Problem:
    return Problem(batch=1, q_heads=16, q_len=n, kv_len=n, head_dim=128, causal=True)


@pytest.mark.parametrize("cascade", ["linear-attention", "linear-attention-identity"])
def test_the_chunked_kernel_moves_about_the_compulsory_bytes(cascade):
    estimate = simulate(cascade, problem(65536), H100)
    compulsory = 4 * 16 * 65536 * 128 * 2  # Q, K, V read, O written
    # one sequence of 64k tokens is cut into segments: their summing launch reads K and V once more
    assert compulsory <= estimate.traffic_bytes < 1.6 * compulsory  # the unfused mapping moved 61x
    many = simulate(cascade, Problem(batch=32, q_heads=16, q_len=2048, kv_len=2048, head_dim=128, causal=True), H100)
    assert compulsory <= many.traffic_bytes < 1.1 * compulsory  # 512 (batch, head) walks fill the GPU alone
    assert estimate.latency_s >= compulsory / 3.0e12
    assert estimate.mapping["kind"] == "gpu-chunked-linear"


def test_time_grows_linearly_with_the_sequence():
    cascade = load_cascade("linear-attention-identity")
    short, long = (kernel_cost(cascade, problem(n), H100).time_s for n in (16384, 65536))
    assert 3.0 < long / short < 5.0  # 4x the tokens: about 4x the time, not 16x


def test_the_feature_map_costs_what_the_cascade_says():
    plain = simulate("linear-attention-identity", problem(16384), H100)
    elu = simulate("linear-attention", problem(16384), H100)
    assert elu.compute_ops["exp"] > plain.compute_ops["exp"]  # elu1 is a special function on the SFU
    assert elu.compute_ops["mac"] == pytest.approx(plain.compute_ops["mac"])


def test_the_backward_is_three_walks_of_the_same_chunk_work():
    # the linear stream models the backward (dQ, dV, dK walks): tests/test_linear_cost.py
    cost = kernel_cost(load_cascade("linear-attention"), problem(4096), H100, direction="backward")
    walks = [launch.name for launch in cost.launches if launch.name.endswith("walk")]
    assert walks == ["dQ walk", "dV walk", "dK walk"]
