"""Simulator-guided Optuna studies over a kernel's configs: `tune()` and what it returns.

The study's first trials are the kernel's default config and the simulator's best predictions
(`study.enqueue_trial`); then TPE proposes configs through `GuidedSampler` (autotune/sampler.py),
which never proposes a config already tried or one the simulator says cannot fit (it falls back
to the best-predicted untried config). tune() is a few steps: plan_tuning, open_study,
run_trials with an Objective per trial; peers.py coordinates workers, result.py reads results. Studies live in an Optuna RDB storage: SQLite by default, so a killed run
resumes where it stopped; a PostgreSQL URL lets many workers (one process per GPU, on any number
of hosts) share one study. docs/autotune.md.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from einsim.autotune.evaluate import GpuEvaluator, Measurement, PredictionEvaluator
from einsim.autotune.peers import DEAD_CHECK_S, PEER_WAIT_LIMIT_S, attr_value, evaluated_count, wait_for_peer
from einsim.autotune.naming import default_study_name, problem_tag
from einsim.autotune.result import TuningResult, exhaustive_best, trial_records
from einsim.autotune.sampler import GuidedSampler
from einsim.autotune.space import SearchSpace, build_space, config_dict, config_key
from einsim.autotune.storage import (
    fail_dead_trials,
    open_storage,
    quiet_optuna,
    redact_url,
    resolve_storage_url,
)
from einsim.errors import ConfigError, EinsimError, EinsimWarning
from einsim.problem import Problem


class TrialFailed(Exception):
    """A config that could not be timed (compile error, out of resources, wrong output): its
    trial is marked FAIL with the reason in its user attrs and the study goes on."""


class FatalTuningError(EinsimError):
    """The GPU context is unusable (illegal memory access and the like): every finished trial is
    saved; rerun the same command to resume in a fresh process."""


def default_budget(space_size: int) -> int:
    """A quarter of the configs that fit, at least 8 (or all of them when there are fewer)."""
    return min(space_size, max(8, math.ceil(0.25 * space_size)))


def default_seed_count(budget: int, space_size: int) -> int:
    """How many of the simulator's best predictions are enqueued before TPE takes over."""
    return min(space_size, max(3, budget // 3))


# ------------------------------------------------------------------------------------------
# tune()
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TuningPlan:
    """What one tune() call will do, decided from its arguments before any study is touched."""

    space: SearchSpace
    allowed: list[str]  # keys of the configs that fit, best predicted first
    runnable: frozenset[str]  # allowed, plus the default config when it is in the distributions
    default_params: dict[str, Any]
    default_in_space: bool  # the default's values are all Optuna choices (it can be enqueued)
    budget: int  # configs the whole study runs
    n_seeds: int  # best predictions enqueued after the default
    study_name: str
    mode: str  # guided | exhaustive, + /dry-run
    evaluator: Callable[[Any], Measurement]
    source: str  # what the objective is: gpu, simulator, replay, custom
    gpu: str

    @property
    def meta(self) -> dict[str, str]:
        """What a study records on creation and a resumed run must match."""
        return {"kernel": self.space.kernel, "problem": problem_tag(self.space.problem),
                "target": self.space.target, "gpu": self.gpu, "objective": self.source}


def plan_tuning(kernel: str, problem: Problem, target: Any, *, trials: int | None, study_name: str | None,
                dry_run: bool, exhaustive: bool, seeds: int | None,
                evaluator: Callable[[Any], Measurement] | None, gpu_name: str | None) -> TuningPlan:
    """The space, budget, seeds, study name and objective of a run (numbers already checked by
    _check_tune_arguments)."""
    space = build_space(kernel, problem, target)
    allowed = space.keys()
    default_params = config_dict(space.default)
    default_in_space = all(default_params.get(f) in space.choices[f] for f in space.fields)
    runnable = set(allowed) | ({config_key(space.default)} if default_in_space else set())
    if evaluator is None:
        evaluator = PredictionEvaluator(space) if dry_run else GpuEvaluator(kernel, problem)
    budget = len(allowed) if exhaustive else min(len(allowed), trials or default_budget(len(allowed)))
    n_seeds = len(allowed) if exhaustive else min(budget, seeds if seeds is not None
                                                  else default_seed_count(budget, len(allowed)))
    return TuningPlan(
        space=space, allowed=allowed, runnable=frozenset(runnable), default_params=default_params,
        default_in_space=default_in_space, budget=budget, n_seeds=n_seeds,
        study_name=study_name or default_study_name(kernel, problem, space.target, dry_run=dry_run,
                                                    exhaustive=exhaustive),
        mode=("exhaustive" if exhaustive else "guided") + ("/dry-run" if dry_run else ""),
        evaluator=evaluator, source=getattr(evaluator, "source", "custom"),
        gpu=gpu_name or getattr(evaluator, "gpu_name", None) or ("simulator" if dry_run else "unknown"))


def open_study(plan: TuningPlan, rdb: Any, sampler: GuidedSampler, storage: str | None):
    """Create the study (recording plan.meta, enqueueing the default and the simulator's best
    predictions) or load it, refusing one made for another kernel, problem, target or GPU."""
    import optuna

    with quiet_optuna():
        try:
            study = optuna.create_study(storage=rdb, study_name=plan.study_name, direction="minimize",
                                        sampler=sampler)
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=plan.study_name, storage=rdb, sampler=sampler)
            _check_same_study(study, plan, storage)
            return study
    for key, value in plan.meta.items():
        study.set_user_attr(key, value)
    study.set_user_attr("space_size", len(plan.allowed))
    default_key = config_key(plan.space.default)
    with quiet_optuna():
        if plan.default_in_space:
            study.enqueue_trial(plan.default_params, user_attrs={"seeded": "default"}, skip_if_exists=True)
        for key in plan.allowed[:plan.n_seeds]:
            if key != default_key:
                study.enqueue_trial(sampler.params_of[key], user_attrs={"seeded": "simulator"}, skip_if_exists=True)
    return study


def _check_same_study(study, plan: TuningPlan, storage: str | None) -> None:
    for key, value in plan.meta.items():
        stored = study.user_attrs.get(key)
        if stored is not None and stored != value:
            raise ConfigError(f"study {plan.study_name!r} in {redact_url(resolve_storage_url(storage))} was made "
                              f"with {key}={stored!r}, this run has {value!r}: its times cannot be mixed; pass "
                              f"another --study name")


class Objective:
    """One trial: take the sampled config, reuse a peer worker's result for it if there is one,
    else measure it with the plan's evaluator. Failures are recorded on the trial and raised
    as TrialFailed (FatalTuningError when the config broke the GPU context)."""

    def __init__(self, plan: TuningPlan, study: Any, rdb: Any) -> None:
        self.plan, self.study, self.rdb = plan, study, rdb
        self.by_key = plan.space.by_key()

    def __call__(self, trial) -> float:
        space = self.plan.space
        params = {name: trial.suggest_categorical(name, list(space.choices[name])) for name in space.fields}
        key = config_key(params)
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("source", self.plan.source)
        found = self.by_key.get(key)
        if found is not None:
            trial.set_user_attr("predicted_s", attr_value(found[1].time_s))
        if key not in self.plan.runnable:
            self._reject(trial, space.config_from_params(params))
        peer = wait_for_peer(self.study, self.rdb, trial.number, key)
        if peer is not None:
            return self._reuse(trial, peer)
        return self._measure(trial, params)

    def _reject(self, trial, config: Any) -> None:
        from einsim.autotune.predict import predict_kernel

        space = self.plan.space
        reasons = "; ".join(predict_kernel(space.kernel, config, space.problem, space.target).reasons) \
            or "not in the space"
        trial.set_user_attr("failure", f"the simulator rejects it: {reasons}")
        trial.set_user_attr("failure_kind", "does_not_fit")
        raise TrialFailed(reasons)

    def _reuse(self, trial, peer) -> float:
        trial.set_user_attr("duplicate_of", peer.number)
        if peer.state.name == "COMPLETE":
            return float(peer.value)
        trial.set_user_attr("failure", peer.user_attrs.get("failure"))
        trial.set_user_attr("failure_kind", peer.user_attrs.get("failure_kind"))
        raise TrialFailed(str(peer.user_attrs.get("failure")))

    def _measure(self, trial, params: dict[str, Any]) -> float:
        measurement = self.plan.evaluator(self.plan.space.config_from_params(params))
        trial.set_user_attr("evaluated", True)
        for attr in ("first_call_s", "bench_s", "error", "timing"):
            trial.set_user_attr(attr, attr_value(getattr(measurement, attr)))
        if not measurement.ok:
            trial.set_user_attr("failure", measurement.failure or "no time")
            trial.set_user_attr("failure_kind", measurement.failure_kind or "runtime")
            if measurement.failure_kind == "fatal":
                raise FatalTuningError(
                    f"config {params} broke the GPU context ({measurement.failure}); every finished trial "
                    f"is saved in study {self.plan.study_name!r}: rerun the same command to resume")
            raise TrialFailed(measurement.failure)
        return float(measurement.time_s)


class _Progress:
    """The progress bar of a run (tqdm), or nothing; also the callback that stops the study
    when the budget is spent, every runnable config is taken, or the goal is reached."""

    def __init__(self, plan: TuningPlan, show: bool, stop_below_s: float | None) -> None:
        self.plan, self.stop_below_s = plan, stop_below_s
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=plan.budget, desc=f"{plan.space.kernel} {plan.mode}", unit="config",
                            dynamic_ncols=True)

    def show(self, study, evaluated: int) -> None:
        if self.bar is None:
            return
        self.bar.n = min(evaluated, self.plan.budget)
        best = None
        with contextlib.suppress(ValueError):
            best = study.best_value
        if best is not None:
            self.bar.set_postfix_str(f"best {best * 1e6:.1f} us", refresh=False)
        self.bar.refresh()

    def __call__(self, study, trial) -> None:  # Optuna's after-trial callback
        evaluated, tried = evaluated_count(study)
        self.show(study, evaluated)
        if evaluated >= self.plan.budget or self.plan.runnable <= tried:
            study.stop()
        if self.stop_below_s is not None and trial.value is not None and trial.value <= self.stop_below_s:
            study.stop()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_trials(study, objective: Objective, plan: TuningPlan, rdb: Any, progress: _Progress,
               started: float, timeout_s: float | None, stop_below_s: float | None) -> None:
    """Run what is missing; then, while the only configs left are held by other workers'
    RUNNING trials, wait for them (bounded): a dead one is failed and its config run here, so
    a killed run's last config is never left as "74 of 75 configs run"."""
    import optuna

    def goal_reached() -> bool:
        return stop_below_s is not None and any(
            t.value is not None and t.value <= stop_below_s
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    progress.show(study, evaluated_count(study)[0])
    settle_deadline = time.monotonic() + PEER_WAIT_LIMIT_S
    for _ in range(1000):
        fail_dead_trials(study, rdb)
        evaluated, tried = evaluated_count(study)
        left_s = None if timeout_s is None else timeout_s - (time.perf_counter() - started)
        if evaluated >= plan.budget or goal_reached() or (left_s is not None and left_s <= 0):
            return
        if not plan.runnable <= tried:
            with quiet_optuna():
                study.optimize(objective, n_trials=4 * plan.budget + 20, timeout=left_s,
                               catch=(TrialFailed,), callbacks=[progress], gc_after_trial=False)
            continue
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return
        if time.monotonic() > settle_deadline:
            warnings.warn(f"tuning study {plan.study_name!r}: stopped waiting after {PEER_WAIT_LIMIT_S:.0f} s for "
                          f"trial(s) {', '.join(str(t.number) for t in running)} of other workers "
                          f"({', '.join(sorted({str(t.user_attrs.get('worker', '?')) for t in running}))}); "
                          f"rerun the same command to pick up their configs if they died", EinsimWarning,
                          stacklevel=3)
            return
        time.sleep(DEAD_CHECK_S)


def tune(kernel: str, problem: Problem, target: str = "h100-sxm", *, trials: int | None = None,
         storage: str | None = None, study_name: str | None = None, dry_run: bool = False,
         exhaustive: bool = False, seed: int | None = None, seeds: int | None = None,
         evaluator: Callable[[Any], Measurement] | None = None, gpu_name: str | None = None,
         progress: bool = False, timeout_s: float | None = None,
         stop_below_s: float | None = None) -> TuningResult:
    """Tune `kernel` for `problem`, guided by the simulator's model of `target`.

    trials: configs to run in the study as a whole (a resumed study runs only what is missing);
    default a quarter of the configs that fit (all of them with exhaustive=True). dry_run: the
    simulator's prediction is the objective (no GPU). evaluator: any config -> Measurement
    callable instead of the GPU (replayed measurements, tests). seeds: how many best-predicted
    configs are enqueued after the default config. stop_below_s: stop as soon as a config runs
    this fast (a goal from the roofline, or the replayed validation's "within 3 %"). Returns the
    whole study's trials.
    """
    started = time.perf_counter()
    _check_tune_arguments(trials=trials, seeds=seeds, seed=seed, timeout_s=timeout_s, stop_below_s=stop_below_s)
    plan = plan_tuning(kernel, problem, target, trials=trials, study_name=study_name, dry_run=dry_run,
                       exhaustive=exhaustive, seeds=seeds, evaluator=evaluator, gpu_name=gpu_name)
    rdb = open_storage(storage)
    sampler = GuidedSampler(plan.space, plan.allowed, seed=seed, n_startup=plan.n_seeds + 1)
    study = open_study(plan, rdb, sampler, storage)
    bar = _Progress(plan, progress, stop_below_s)
    interrupted = False
    try:
        run_trials(study, Objective(plan, study, rdb), plan, rdb, bar, started, timeout_s, stop_below_s)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    space = plan.space
    result = TuningResult(kernel=space.kernel, problem=problem, target=space.target, gpu=plan.gpu,
                          study_name=plan.study_name, storage=redact_url(resolve_storage_url(storage)),
                          mode=plan.mode, space_size=len(plan.allowed), rejected=len(space.rejected),
                          budget=plan.budget, trials=trial_records(study), wall_s=time.perf_counter() - started,
                          interrupted=interrupted)
    if not exhaustive:
        result.exhaustive_best_s = exhaustive_best(rdb, kernel, problem, space.target, dry_run=dry_run)
    if interrupted:
        raise TuningInterrupted(result)
    result.retest = retest_best_and_default(plan.evaluator, space, result)
    return result


def retest_best_and_default(evaluator, space: SearchSpace, result: TuningResult,
                            rounds: int = 3) -> dict[str, list[float]]:
    """Best and default configs timed again, `rounds` interleaved rounds (evaluators that can,
    i.e. the GPU's): the summary's test-retest spread and a best-vs-default ratio measured in
    the same conditions, whatever order the trials ran in."""
    retest = getattr(evaluator, "retest", None)
    best, default = result.best, result.default
    if retest is None or best is None:
        return {}
    configs = {"best": space.config_from_params(best.config)}
    if default is not None and default.number != best.number:
        configs["default"] = space.config_from_params(default.config)
    try:
        return retest(configs, rounds=rounds)
    except Exception:  # noqa: BLE001 - a retest must never lose the study's result
        return {}


def _check_tune_arguments(*, trials: int | None, seeds: int | None, seed: int | None, timeout_s: float | None,
                          stop_below_s: float | None) -> None:
    """Numbers tune() takes, refused before any work when they cannot mean anything (--seeds -5
    used to enqueue 69 configs)."""
    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if trials is not None and (not whole(trials) or trials <= 0):
        raise ConfigError(f"--trials must be a positive whole number, got {trials!r}")
    if seeds is not None and (not whole(seeds) or seeds < 0):
        raise ConfigError(f"--seeds must be 0 or more (the simulator's best configs run first), got {seeds!r}")
    if seed is not None and (not whole(seed) or not 0 <= seed < 2**32):
        raise ConfigError(f"--seed must be a whole number from 0 to 2**32 - 1 (numpy's seeds), got {seed!r}")
    for option, value in (("--timeout", timeout_s), ("stop_below_s", stop_below_s)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"{option} must be a positive number of seconds, got {value!r}")


class TuningInterrupted(KeyboardInterrupt):
    """Ctrl-C during tune(): carries the result so far (every finished trial is in the storage)."""

    def __init__(self, result: TuningResult) -> None:
        super().__init__("interrupted")
        self.result = result
