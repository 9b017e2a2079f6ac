"""Honest timing in the autotuner: the best and the default are re-timed after the study in
interleaved rounds (the summary's test-retest spread and a same-conditions ratio); the spread
formula; on a GPU, CUDA-graph timing from a cold L2 agrees with do_bench (marked gpu)."""

from __future__ import annotations

import io

import pytest

optuna = pytest.importorskip("optuna")

from einsim.autotune import build_space, tune  # noqa: E402
from einsim.autotune.evaluate import Measurement, PredictionEvaluator  # noqa: E402
from einsim.autotune.space import config_key  # noqa: E402
from einsim.autotune.timing import spread  # noqa: E402
from einsim.cli.autotune import print_summary  # noqa: E402
from einsim.problem import Problem  # noqa: E402

DECODE = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)


class RetestingEvaluator(PredictionEvaluator):
    """The simulator's times as measurements, and a retest that records what it was asked."""

    source = "gpu"
    gpu_name = "test GPU"

    def __init__(self, space) -> None:
        super().__init__(space)
        self.asked = None

    def __call__(self, config):
        found = super().__call__(config)
        return Measurement(found.time_s, source="gpu", timing="cuda-graph")

    def retest(self, configs, rounds=3):
        self.asked = {label: config_key(config) for label, config in configs.items()}
        return {label: [1e-4 * (1 + 0.01 * r) * (2 if label == "default" else 1)
                        for r in range(rounds)] for label in configs}


def test_best_and_default_are_retested_in_interleaved_rounds():
    space = build_space("decode", DECODE, "h100-sxm")
    evaluator = RetestingEvaluator(space)
    result = tune("decode", DECODE, storage=":memory:", trials=6, seed=0, evaluator=evaluator)
    assert evaluator.asked["best"] == config_key(result.best.config)
    if result.best.number != result.default.number:
        assert evaluator.asked["default"] == config_key(result.default.config)
    assert set(result.retest) == set(evaluator.asked) and all(len(t) == 3 for t in result.retest.values())
    text = io.StringIO()
    print_summary(result, stream=text)
    assert "retest, 3 interleaved rounds: best 101.0 us (spread 2.0 %)" in text.getvalue()


def test_dry_runs_are_not_retested():
    result = tune("decode", DECODE, dry_run=True, storage=":memory:", trials=4, seed=0)
    assert result.retest == {}


def test_spread_is_range_over_median():
    assert spread([1.0]) == 0.0
    assert spread([0.98, 1.0, 1.03]) == pytest.approx(0.05)


@pytest.mark.gpu
def test_graph_timing_agrees_with_do_bench_on_a_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from einsim.autotune.timing import eager_time_s, graph_time_s, warm_up_gpu

    warm_up_gpu()
    source = torch.randn(64 * 1024 * 1024, device="cuda")
    target = torch.empty_like(source)
    graph = graph_time_s(lambda: target.copy_(source))
    eager = eager_time_s(lambda: target.copy_(source))
    assert 0.8 < graph / eager < 1.2, (graph, eager)
