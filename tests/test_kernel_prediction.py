"""The autotuner's prediction of one kernel config (autotune/predict.py: the kernel's config as
mapping data, priced by the one GPU cost model): fit, occupancy, waves, and the direction of its
predictions. Torch-free, fast."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from einsim.errors import ConfigError
from einsim.problem import Problem
from einsim.kernels.registry import get_kernel
from einsim.autotune.predict import predict_kernel
from einsim.simulator.gpu_cost import gpu_roofs
from einsim.targets import load_target

REPO = Path(__file__).resolve().parent.parent
FWD = get_kernel("attention-fwd")
BWD = get_kernel("attention-bwd")
H100 = load_target("h100-sxm")
DECODE = get_kernel("decode")


def forward_problem(**changes) -> Problem:
    fields = dict(batch=4, q_heads=16, kv_heads=16, q_len=4096, kv_len=4096, head_dim=128, causal=True)
    fields.update(changes)
    return Problem(**fields)


def decode_problem(**changes) -> Problem:
    fields = dict(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)
    fields.update(changes)
    return Problem(**fields)


def test_every_declared_config_gets_a_finite_prediction_or_a_reason() -> None:
    for spec, problem in ((FWD, forward_problem()), (DECODE, decode_problem()), (BWD, forward_problem())):
        for config in spec.search_space(problem):
            prediction = predict_kernel(spec.name, config, problem, "h100-sxm")
            assert prediction.fits == math.isfinite(prediction.time_s)
            assert prediction.fits or prediction.reasons
            if prediction.fits:
                assert prediction.ctas_per_sm >= 1 and prediction.waves >= 1
                assert 0 < prediction.wave_efficiency <= 1.0 + 1e-9


def test_config_that_overflows_shared_memory_does_not_fit() -> None:
    config = dataclasses.replace(FWD.default_config(forward_problem()), BLOCK_M=256, BLOCK_N=256, num_stages=6)
    prediction = predict_kernel("attention-fwd", config, forward_problem(), "h100-sxm")
    assert not prediction.fits and prediction.time_s == math.inf
    assert any("shared memory" in reason for reason in prediction.reasons)


def test_more_stages_never_fit_more_programs_per_sm() -> None:
    problem = forward_problem(head_dim=64)
    base = FWD.default_config(problem)
    residency = [predict_kernel("attention-fwd", dataclasses.replace(base, BLOCK_M=64, num_warps=4, num_stages=s),
                                problem, "h100-sxm").ctas_per_sm for s in (2, 3, 4)]
    assert residency == sorted(residency, reverse=True)


def test_a_grid_one_program_past_the_slots_takes_a_second_wave() -> None:
    roofs = gpu_roofs(H100)
    config = FWD.default_config(forward_problem())
    one = predict_kernel("attention-fwd", config, forward_problem(causal=False, q_len=128, kv_len=4096), H100)
    slots = roofs.sm_count * one.ctas_per_sm
    # One shared K/V head (MQA) so that HBM stays far below the compute time.
    full = forward_problem(causal=False, batch=1, q_heads=slots, kv_heads=1, q_len=128, kv_len=4096)
    extra = forward_problem(causal=False, batch=1, q_heads=slots + 1, kv_heads=1, q_len=128, kv_len=4096)
    a = predict_kernel("attention-fwd", config, full, H100)
    b = predict_kernel("attention-fwd", config, extra, H100)
    assert a.waves == 1 and b.waves == 2
    assert b.time_s > 1.5 * a.time_s  # the tail wave costs nearly a whole wave


def test_causal_costs_about_half_of_full_attention() -> None:
    config = FWD.default_config(forward_problem())
    causal = predict_kernel("attention-fwd", config, forward_problem(causal=True), "h100-sxm").time_s
    full = predict_kernel("attention-fwd", config, forward_problem(causal=False), "h100-sxm").time_s
    assert 0.4 < causal / full < 0.7


def test_forward_is_never_faster_than_its_roofs() -> None:
    roofs = gpu_roofs(H100)
    problem = forward_problem()
    for config in FWD.search_space(problem):
        prediction = predict_kernel("attention-fwd", config, problem, H100)
        assert prediction.time_s >= problem.forward_flops() / roofs.matmul_flops
        assert prediction.time_s >= FWD.min_bytes(problem) / roofs.hbm_bytes_per_s


def test_decode_at_long_kv_is_bound_by_hbm_bytes() -> None:
    roofs = gpu_roofs(H100)
    problem = decode_problem(kv_len=65536)
    for config in DECODE.search_space(problem):
        prediction = predict_kernel("decode", config, problem, H100)
        assert prediction.time_s >= DECODE.min_bytes(problem) / roofs.hbm_bytes_per_s
    best = min(predict_kernel("decode", c, problem, H100).time_s for c in DECODE.search_space(problem))
    assert best < 1.5 * DECODE.min_bytes(problem) / roofs.hbm_bytes_per_s


def test_decode_with_too_few_programs_is_predicted_slow() -> None:
    # One KV group and one split cannot fill 132 SMs: the model must see the idle SMs.
    problem = decode_problem(batch=1, q_heads=4, kv_heads=1, kv_len=32768)
    one_split = dataclasses.replace(DECODE.default_config(problem), NUM_SPLITS=1)
    many = dataclasses.replace(DECODE.default_config(problem), NUM_SPLITS=128)
    slow = predict_kernel("decode", one_split, problem, "h100-sxm")
    fast = predict_kernel("decode", many, problem, "h100-sxm")
    assert slow.time_s > 4 * fast.time_s


def test_backward_configs_are_ranked_by_the_backward_model() -> None:
    problem = forward_problem()
    config = BWD.default_config(problem)
    backward = predict_kernel("attention-bwd", config, problem, "h100-sxm")
    forward = predict_kernel("attention-fwd", FWD.default_config(problem), problem, "h100-sxm")
    assert backward.fits and 1.8 < backward.time_s / forward.time_s < 4.5  # 2.5x the matmuls, recompute
    atomic = predict_kernel("attention-bwd", dataclasses.replace(config, dq_atomic=True), problem, "h100-sxm")
    assert atomic.fits and atomic.time_s != backward.time_s


def test_unknown_kernel_and_non_gpu_targets_are_clear_errors() -> None:
    config = FWD.default_config(forward_problem())
    with pytest.raises(ConfigError, match="no-such-kernel"):
        predict_kernel("no-such-kernel", config, forward_problem(), "h100-sxm")
    with pytest.raises(Exception, match="not a GPU"):
        predict_kernel("attention-fwd", config, forward_problem(), "fusemax-cloud")


def test_kernel_prediction_needs_no_torch() -> None:
    code = ("import sys; from einsim.autotune.predict import predict_kernel; "
            "from einsim.problem import Problem as P; "
            "from einsim.kernels.registry import get_kernel; "
            "p = P(batch=2, q_heads=8, kv_heads=8, q_len=1024, kv_len=1024, head_dim=64, causal=True); s = get_kernel('attention-fwd'); "
            "print(predict_kernel(s.name, s.default_config(p), p, 'h100-sxm').time_s); "
            "assert 'torch' not in sys.modules and 'triton' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
