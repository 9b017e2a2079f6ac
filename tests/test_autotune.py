"""Simulator-guided tuning without a GPU: the search space, the study's seeding and sampling,
failing configs, resuming a killed run from SQLite, the tuning cache and the CLI."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from einsim.autotune import build_space, config_key, tune  # noqa: E402
from einsim.autotune.evaluate import Measurement, PredictionEvaluator  # noqa: E402
from einsim.autotune.result import load_result  # noqa: E402
from einsim.autotune.study import FatalTuningError  # noqa: E402
from einsim.cli import main  # noqa: E402
from einsim.errors import ConfigError  # noqa: E402
from einsim.kernels.tuned import export_best  # noqa: E402
from einsim.problem import Problem  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FWD = Problem(batch=4, q_heads=16, kv_heads=16, q_len=4096, kv_len=4096, head_dim=128, causal=True)
DECODE = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)


@pytest.fixture
def tmp_path(fast_tmp_path: Path) -> Path:
    """Every test here keeps its files (SQLite studies, cache files) in memory: conftest.py."""
    return fast_tmp_path


def sqlite(tmp_path: Path, name: str = "tuning.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def test_space_is_the_kernels_declared_configs_ranked_by_prediction() -> None:
    space = build_space("attention-fwd", FWD, "h100-sxm")
    times = [prediction.time_s for _, prediction in space.ranked]
    assert times == sorted(times) and all(math.isfinite(t) for t in times)
    assert space.size + len(space.rejected) == len(space.ranked) + len(space.rejected)
    assert set(space.fields) >= {"BLOCK_M", "BLOCK_N", "num_warps", "num_stages"}
    assert len(set(space.keys())) == space.size


def test_dry_run_starts_with_the_default_then_the_simulators_best(tmp_path: Path) -> None:
    result = tune("attention-fwd", FWD, dry_run=True, storage=sqlite(tmp_path), trials=12, seeds=4, seed=0)
    space = build_space("attention-fwd", FWD, "h100-sxm")
    first = sorted(result.trials, key=lambda t: t.number)
    assert first[0].seeded == "default" and config_key(first[0].config) == config_key(space.default)
    seeded = [config_key(t.config) for t in first if t.seeded == "simulator"]
    expected = [k for k in space.keys()[:4] if k != config_key(space.default)]
    assert seeded == expected
    assert len(result.evaluated) == 12
    assert result.best.measured_s == min(t.measured_s for t in result.completed)


def test_guided_search_never_runs_a_config_twice(tmp_path: Path) -> None:
    space = build_space("decode", DECODE, "h100-sxm")
    result = tune("decode", DECODE, dry_run=True, storage=":memory:", trials=space.size, seed=3)
    keys = [config_key(t.config) for t in result.evaluated]
    assert len(keys) == len(set(keys)) == space.size


def test_a_failing_config_fails_its_own_trial_and_the_study_goes_on(tmp_path: Path) -> None:
    space = build_space("attention-fwd", FWD, "h100-sxm")
    simulator = PredictionEvaluator(space)

    def evaluator(config):
        if config.BLOCK_N == 128:
            return Measurement(math.nan, failure="CompilationError: boom", failure_kind="compile")
        if config.BLOCK_M == 64 and config.num_stages == 4:
            return Measurement(math.nan, failure="‖out − ref‖/‖ref‖ = 1 > 0.02", failure_kind="wrong_output")
        return simulator(config)

    result = tune("attention-fwd", FWD, storage=":memory:", evaluator=evaluator, trials=30, seed=1)
    failed = result.failures
    assert failed and all(t.state == "FAIL" for t in failed)
    assert {t.failure_kind for t in failed} <= {"compile", "wrong_output"}
    assert len(result.evaluated) == 30  # failures count as run configs; the study went on to its budget
    assert result.best.config["BLOCK_N"] != 128


def test_a_broken_gpu_context_stops_the_study_and_keeps_finished_trials(tmp_path: Path) -> None:
    space = build_space("decode", DECODE, "h100-sxm")
    simulator = PredictionEvaluator(space)
    calls = []

    def evaluator(config):
        calls.append(config)
        if len(calls) == 4:
            return Measurement(math.nan, failure="illegal memory access", failure_kind="fatal")
        return simulator(config)

    with pytest.raises(FatalTuningError, match="rerun"):
        tune("decode", DECODE, storage=sqlite(tmp_path), evaluator=evaluator, trials=10, seed=0)
    kept = load_result("decode", DECODE, storage=sqlite(tmp_path), study_name=None, dry_run=False)
    assert sum(t.state == "COMPLETE" for t in kept.trials) == 3


def test_resume_after_stop_runs_only_the_missing_trials(tmp_path: Path) -> None:
    storage = sqlite(tmp_path)
    first = tune("decode", DECODE, dry_run=True, storage=storage, trials=6, seed=0)
    before = {t.number: (t.config, t.measured_s) for t in first.completed}
    second = tune("decode", DECODE, dry_run=True, storage=storage, trials=14, seed=0)
    assert len(second.evaluated) == 14
    after = {t.number: (t.config, t.measured_s) for t in second.completed}
    assert all(after[n] == before[n] for n in before)
    # Asking again for what is already there runs nothing.
    third = tune("decode", DECODE, dry_run=True, storage=storage, trials=14, seed=0)
    assert len(third.trials) == len(second.trials)


WORKER = textwrap.dedent("""
    import sys, time
    from einsim.autotune import build_space, tune
    from einsim.autotune.evaluate import PredictionEvaluator
    from einsim.problem import Problem
    problem = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)
    simulator = PredictionEvaluator(build_space("decode", problem, "h100-sxm"))
    def slow(config):
        time.sleep(0.25)
        return simulator(config)
    slow.source = "simulator"
    tune("decode", problem, dry_run=True, storage=sys.argv[1], trials=20, evaluator=slow, seed=0)
""")


@pytest.mark.slow
def test_killed_run_resumes_without_losing_a_finished_trial(tmp_path: Path) -> None:
    storage = sqlite(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    worker = subprocess.Popen([sys.executable, "-c", WORKER, storage], env=env, stderr=subprocess.PIPE)
    name = "decode/h100-sxm/B8-H32-KV8-Q1-N8192-D128-full-bf16/dry-run"
    finished: dict[int, float] = {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and len(finished) < 4:
            time.sleep(0.1)
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue
            finished = {t.number: t.value for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert len(finished) >= 4
    study = optuna.load_study(study_name=name, storage=storage)
    killed = {t.number: t.value for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert len(killed) < 20  # it really was stopped half-way
    result = tune("decode", DECODE, dry_run=True, storage=storage, trials=20, seed=0)
    complete = {t.number: t.measured_s for t in result.completed if t.evaluated}
    assert all(complete[n] == value for n, value in killed.items())  # nothing finished was lost
    assert len(result.evaluated) == 20
    keys = [config_key(t.config) for t in result.evaluated]
    assert len(keys) == len(set(keys))


def test_a_study_made_for_another_problem_is_refused(tmp_path: Path) -> None:
    storage = sqlite(tmp_path)
    tune("decode", DECODE, dry_run=True, storage=storage, trials=3, study_name="mine")
    other = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=4096, head_dim=128)
    with pytest.raises(ConfigError, match="another --study"):
        tune("decode", other, dry_run=True, storage=storage, trials=3, study_name="mine")


@pytest.mark.slow
def test_cli_dry_run_prints_the_closing_table(tmp_path: Path, capsys) -> None:
    storage = sqlite(tmp_path)
    assert main(["autotune", "--kernel", "decode", "--shape", "8,32,8192,128", "--kv-heads", "8", "--dry-run",
                 "--exhaustive", "--storage", storage, "--no-progress"]) == 0
    assert main(["autotune", "--kernel", "decode", "--shape", "8,32,8192,128", "--kv-heads", "8", "--dry-run",
                 "--trials", "6", "--storage", storage, "--no-progress"]) == 0
    out = capsys.readouterr().out
    size = build_space("decode", DECODE, "h100-sxm").size
    assert "vs exhaustive" in out and f"6 of {size} configs simulated" in out and "exhaustive best" in out
    # A dry run measured nothing: its one time column is the simulator's, with no "predicted"
    # beside it and no predicted/measured ratio of 1.00 that would read as a validation.
    header = next(line for line in out.splitlines() if line.startswith("rank"))
    assert "simulated us" in header and "predicted" not in header and "measured" not in header
    assert main(["autotune", "--kernel", "decode", "--shape", "8,32,8192,128", "--kv-heads", "8", "--dry-run",
                 "--trials", "6", "--storage", storage, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["evaluated"] == 6 and data["best"]["config"]


@pytest.mark.parametrize("argv, message", [
    (["--kernel", "nope", "--shape", "1,8,128,64"], "unknown kernel"),
    (["--kernel", "decode", "--shape", "1,8,12x"], "--shape"),
    (["--kernel", "decode", "--shape", "1,8,128,64", "--trials", "0"], "--trials"),
    (["--kernel", "decode"], "--shape"),
    (["--kernel", "decode", "--shape", "1,8,128,64", "--target", "fusemax-cloud"], "not a GPU"),
    (["--kernel", "decode", "--shape", "1,8,128,64", "--storage", "nosuchdb://x"], "cannot open tuning storage"),
])
def test_cli_bad_input_exits_2_with_a_clear_message(argv, message, tmp_path: Path, capsys) -> None:
    argv = ["autotune", *argv, "--dry-run", "--no-progress"]
    if "--storage" not in argv:
        argv += ["--storage", sqlite(tmp_path)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_launchers_take_the_exported_config_for_their_default(tmp_path: Path, monkeypatch) -> None:
    from einsim.kernels.limits import DeviceLimits
    from einsim.kernels.registry import get_kernel

    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path))
    spec = get_kernel("decode")
    space = build_space("decode", DECODE, "h100-sxm")
    tuned = next(c for c, _ in space.ranked if c != space.default)
    limits = DeviceLimits.h100()
    assert spec.resolve_config(None, DECODE, limits) == space.default
    export_best("decode", DECODE, limits.name, tuned, measured_s=1e-4)
    assert spec.resolve_config(None, DECODE, limits) == tuned


def test_summary_ties_share_a_rank_in_trial_order_and_say_so() -> None:
    from types import SimpleNamespace

    from einsim.cli.autotune import print_summary, summary_rows

    def trial(number: int, us: float) -> SimpleNamespace:
        return SimpleNamespace(number=number, measured_s=us * 1e-6, predicted_s=us * 1e-6,
                               config={"BLOCK_M": 16 * (number + 1)})

    trials = [trial(3, 90.0), trial(0, 92.5), trial(2, 92.5), trial(1, 92.5)]
    result = SimpleNamespace(completed=trials, default=trials[1], exhaustive_best_s=None, mode="guided/dry-run",
                             kernel="decode", problem=DECODE, target="h100-sxm", gpu=None, failures=[],
                             evaluated=trials, trials=trials, space_size=36, budget=4, rejected=0, study_name="s",
                             storage="sqlite:///x.db", best=trials[0], retest=None)
    rows = summary_rows(result)
    assert [(row[0], row[1]) for row in rows] == [(1, 3), (2, 0), (2, 1), (2, 2)]
    stream = io.StringIO()
    print_summary(result, stream)
    assert "equal times share a rank and are listed in trial order" in stream.getvalue()
