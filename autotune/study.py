"""Simulator-guided Optuna studies over a kernel's configs: `tune()` and what it returns.

The study's first trials are the kernel's default config and the simulator's best predictions
(`study.enqueue_trial`); then TPE proposes configs, through `GuidedSampler`, which never proposes a
config already tried or one the simulator says cannot fit (it falls back to the best-predicted
untried config). Studies live in an Optuna RDB storage: SQLite by default, so a killed run
resumes where it stopped; a PostgreSQL URL lets many workers (one process per GPU, on any number
of hosts) share one study. docs/autotune.md.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from einsim.autotune.evaluate import GpuEvaluator, Measurement, PredictionEvaluator
from einsim.autotune.space import SearchSpace, build_space, config_dict, config_key
from einsim.autotune.storage import (
    claim_trial,
    fail_dead_trials,
    no_experimental_warnings,
    open_storage,
    quiet_optuna,
    redact_url,
    resolve_storage_url,
)
from einsim.errors import ConfigError, EinsimError, EinsimWarning
from einsim.problem import Problem

WAIT_POLL_S = 0.05  # how often a worker checks on lower-numbered trials of other workers
DEAD_CHECK_S = 1.0  # how often a waiting worker looks for dead RUNNING trials
# The longest a worker waits for another worker's trial that runs the same config (a GPU trial
# compiles and times one config: seconds, a minute at most); after it, it runs the config itself.
PEER_WAIT_LIMIT_S = 600.0


class TrialFailed(Exception):
    """A config that could not be timed (compile error, out of resources, wrong output): its
    trial is marked FAIL with the reason in its user attrs and the study goes on."""


class FatalTuningError(EinsimError):
    """The GPU context is unusable (illegal memory access and the like): every finished trial is
    saved; rerun the same command to resume in a fresh process."""


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study as the tables and the cache need it."""

    number: int
    state: str  # COMPLETE | FAIL | RUNNING | WAITING | PRUNED
    config: dict[str, Any]
    measured_s: float | None  # the objective: GPU median time (or the prediction for a dry run)
    predicted_s: float | None
    failure: str = ""
    failure_kind: str = ""
    evaluated: bool = False  # this trial ran the config (not a repeat of another trial)
    duplicate_of: int | None = None
    worker: str = ""
    wall_s: float = 0.0  # trial start to finish
    seeded: str = ""  # "default" | "simulator" when enqueued, "" when sampled


@dataclass
class TuningResult:
    """What `tune()` found, read back from the study (so a resumed run reports every trial)."""

    kernel: str
    problem: Problem
    target: str
    gpu: str  # the GPU measured on, or "simulator" for a dry run
    study_name: str
    storage: str
    mode: str  # guided | exhaustive, with "dry-run" for a simulator objective
    space_size: int
    rejected: int  # configs the simulator discarded as not fitting
    budget: int
    trials: list[TrialRecord] = field(default_factory=list)
    wall_s: float = 0.0  # this invocation
    exhaustive_best_s: float | None = None  # from the exhaustive study in the same storage, if any
    interrupted: bool = False
    # Best and default re-timed after the study, interleaved rounds on the same warm GPU:
    # {"best": [s, ...], "default": [s, ...]} (empty for dry runs and replays).
    retest: dict[str, list[float]] = field(default_factory=dict)

    @property
    def evaluated(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.evaluated]

    @property
    def completed(self) -> list[TrialRecord]:
        return sorted((t for t in self.trials if t.state == "COMPLETE" and t.measured_s is not None),
                      key=lambda t: (t.measured_s, t.number))

    @property
    def best(self) -> TrialRecord | None:
        done = self.completed
        return done[0] if done else None

    @property
    def default(self) -> TrialRecord | None:
        for t in sorted(self.trials, key=lambda t: t.number):
            if t.seeded == "default" and t.state == "COMPLETE":
                return t
        return None

    @property
    def failures(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.state == "FAIL" and t.failure]


# ------------------------------------------------------------------------------------------
# Storage and naming
# ------------------------------------------------------------------------------------------

def problem_tag(problem: Problem) -> str:
    heads = f"H{problem.q_heads}" + (f"-KV{problem.kv_heads}" if problem.kv_heads != problem.q_heads else "")
    mask = "causal" if problem.causal else "full"
    if problem.window is not None:
        mask += f"-w{problem.window[0]}.{problem.window[1]}"
    q = f"-Q{problem.q_len}" if problem.q_len != problem.kv_len else ""
    dv = f"-DV{problem.v_head_dim}" if problem.v_head_dim != problem.head_dim else ""
    return f"B{problem.batch}-{heads}{q}-N{problem.kv_len}-D{problem.head_dim}{dv}-{mask}-{problem.dtype}"


def default_study_name(kernel: str, problem: Problem, target: str, *, dry_run: bool = False,
                       exhaustive: bool = False) -> str:
    """The same command always names the same study, which is what makes resuming work."""
    name = f"{kernel}/{target}/{problem_tag(problem)}"
    if dry_run:
        name += "/dry-run"
    if exhaustive:
        name += "/exhaustive"
    return name


def default_budget(space_size: int) -> int:
    """A quarter of the configs that fit, at least 8 (or all of them when there are fewer)."""
    return min(space_size, max(8, math.ceil(0.25 * space_size)))


def default_seed_count(budget: int, space_size: int) -> int:
    """How many of the simulator's best predictions are enqueued before TPE takes over."""
    return min(space_size, max(3, budget // 3))


# ------------------------------------------------------------------------------------------
# The sampler: TPE that never repeats a config and falls back on the simulator's ranking
# ------------------------------------------------------------------------------------------

def _tried_keys(study, exclude_number: int | None = None, *, waiting: bool = True) -> set[str]:
    """Configs a trial has taken or is taking: complete, running, pruned, waiting in the queue
    (unless waiting=False), or failed for a reason of the config's own (a worker killed
    mid-trial leaves its config free again)."""
    import optuna

    State = optuna.trial.TrialState
    keys = set()
    for t in study.get_trials(deepcopy=False):
        if t.number == exclude_number or (t.state == State.WAITING and not waiting):
            continue
        if t.state == State.FAIL and not t.user_attrs.get("failure"):
            continue
        key = t.user_attrs.get("config_key")
        if key is None:
            params = t.params or (t.system_attrs.get("fixed_params") or {})
            if not params:
                continue
            key = config_key(params)
        keys.add(key)
    return keys


def _feature_vectors(space: SearchSpace) -> dict[str, list[float]]:
    """Each config as numbers scaled to [0, 1] per field: log2 for powers of two, 0/1 for
    booleans, -1 for None (automatic), so that neighbouring configs are near each other."""
    raw: dict[str, list[float]] = {}
    for key, (config, _) in space.by_key().items():
        values = []
        for name in space.fields:
            value = getattr(config, name)
            if value is None:
                values.append(-1.0)
            elif isinstance(value, bool):
                values.append(float(value))
            elif isinstance(value, (int, float)) and value > 0 and math.log2(value).is_integer():
                values.append(math.log2(value))
            else:
                values.append(float(value) if isinstance(value, (int, float)) else float(hash(value) % 7))
        raw[key] = values
    columns = list(zip(*raw.values())) if raw else []
    low = [min(c) for c in columns]
    span = [max(c) - min(c) or 1.0 for c in columns]
    return {key: [(v - lo) / sp for v, lo, sp in zip(values, low, span)] for key, values in raw.items()}


def corrected_ranking(space: SearchSpace, measured: dict[str, float], features: dict[str, list[float]],
                      bandwidth: float = 0.35, prior_weight: float = 0.5) -> list[str]:
    """The configs that fit, ranked by the simulator's prediction corrected by what was measured:
    log(predicted) plus a kernel-weighted mean of log(measured / predicted) over measured
    neighbours (shrunk toward 0 by prior_weight). The simulator is the prior; trials fix its
    systematic errors (a tile size it over-rates, a warp count it under-rates) locally."""
    predicted = {key: prediction.time_s for key, (_, prediction) in space.by_key().items()}
    residuals = [(features[k], math.log(v / predicted[k])) for k, v in measured.items()
                 if k in predicted and v > 0 and predicted[k] > 0]
    scores = {}
    for key, x in features.items():
        weight_sum, total = prior_weight, 0.0
        for y, residual in residuals:
            distance = sum((a - b) ** 2 for a, b in zip(x, y))
            weight = math.exp(-distance / (2 * bandwidth ** 2))
            weight_sum += weight
            total += weight * residual
        scores[key] = math.log(predicted[key]) + total / weight_sum
    return sorted(scores, key=lambda k: (scores[k], k))


def make_guided_sampler(space: SearchSpace, allowed: list[str], *, seed: int | None, n_startup: int,
                        corrected_every: int = 2):
    import optuna

    features = _feature_vectors(space)

    class GuidedSampler(optuna.samplers.BaseSampler):
        """TPE over the config fields, alternating with the simulator's ranking corrected by the
        measurements so far (every `corrected_every`-th sampled trial). A TPE proposal that
        repeats a tried config or falls outside the configs that fit is redrawn, then replaced by
        the best corrected-ranking config not yet tried."""

        def __init__(self) -> None:
            with quiet_optuna(), no_experimental_warnings():
                self.base = optuna.samplers.TPESampler(
                    seed=seed, multivariate=True, constant_liar=True, n_startup_trials=max(1, n_startup))
            self.distributions = {name: optuna.distributions.CategoricalDistribution(list(values))
                                  for name, values in space.choices.items()}
            self.allowed = list(allowed)
            self.allowed_set = set(allowed)
            self.params_of = {key: config_dict(config) for key, (config, _) in space.by_key().items()}
            self.redraws = 6

        def infer_relative_search_space(self, study, trial):
            return dict(self.distributions)

        def _ranking(self, study) -> list[str]:
            import optuna

            measured = {}
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                key = t.user_attrs.get("config_key")
                if key is not None and t.value is not None:
                    measured[key] = float(t.value)
            if not measured:
                return self.allowed
            return [k for k in corrected_ranking(space, measured, features) if k in self.allowed_set]

        def sample_relative(self, study, trial, search_space):
            if trial.system_attrs.get("fixed_params"):
                return {}
            tried = _tried_keys(study, trial.number)
            use_tpe = corrected_every <= 0 or trial.number % corrected_every != 0
            for _ in range(self.redraws if use_tpe else 0):
                with no_experimental_warnings():
                    params = self.base.sample_relative(study, trial, search_space)
                if len(params) < len(self.distributions):
                    break  # TPE is still in its start-up trials: take the simulator's order
                key = config_key({name: params[name] for name in space.fields})
                if key in self.allowed_set and key not in tried:
                    return params
            for key in self._ranking(study):
                if key not in tried:
                    return dict(self.params_of[key])
            return {}

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.base.sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            # The trial is RUNNING from here, but Optuna's heartbeat thread starts only after
            # sampling: a first heartbeat now keeps a slow sampler from looking like a dead worker.
            claim_trial(study, trial._trial_id)
            self.base.before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self.base.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.base.reseed_rng()

    return GuidedSampler()


# ------------------------------------------------------------------------------------------
# tune()
# ------------------------------------------------------------------------------------------

def _attr(value: Any) -> Any:
    """User attrs are JSON: no NaN or inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _evaluated_count(study) -> tuple[int, set[str]]:
    """(configs this study has run, keys of every config tried)."""
    import optuna

    State = optuna.trial.TrialState
    evaluated = 0
    for t in study.get_trials(deepcopy=False, states=(State.COMPLETE, State.FAIL)):
        if t.user_attrs.get("evaluated") and (t.state == State.COMPLETE or t.user_attrs.get("failure")):
            evaluated += 1
    return evaluated, _tried_keys(study, waiting=False)


def _wait_for_peer(study, rdb, number: int, key: str, limit_s: float = PEER_WAIT_LIMIT_S):
    """The trial whose result this one should reuse instead of running `key` again, or None.

    Trial numbers are unique tickets handed out by the storage, so the bakery rule applies:
    wait until every lower-numbered running trial has said which config it runs (its
    `config_key` attr, written first thing); if one of them runs this config, wait for it and
    reuse its result; a finished trial that ran it is reused at once. Higher-numbered trials
    are never waited for, so two workers never time one config and never wait on each other.
    Trials of dead workers are failed while waiting (`fail_dead_trials`: within GRACE_PERIOD_S
    of their last sign of life), and no wait lasts longer than `limit_s`: past it, a warning
    names the trial waited for and this worker runs the config itself.
    """
    import optuna

    State = optuna.trial.TrialState
    started = time.monotonic()
    next_dead_check = started
    while True:
        peer, choosing = None, None
        for t in study.get_trials(deepcopy=False, states=(State.COMPLETE, State.RUNNING, State.FAIL)):
            if t.number == number:
                continue
            other = t.user_attrs.get("config_key")
            if t.state == State.RUNNING:
                if t.number < number:
                    if other is None:
                        choosing = t
                    elif other == key:
                        peer = t
                continue
            if other != key or not t.user_attrs.get("evaluated"):
                continue
            if t.state == State.COMPLETE or t.user_attrs.get("failure"):
                return t
        waited_on = peer or choosing
        if waited_on is None:
            return None
        now = time.monotonic()
        if now - started > limit_s:
            what = "runs the same config" if peer is not None else "has not said which config it runs"
            warnings.warn(f"tuning study {study.study_name!r}: trial {number} waited {limit_s:.0f} s for trial "
                          f"{waited_on.number} (worker {waited_on.user_attrs.get('worker') or 'unknown'}), which "
                          f"{what}; running config {key} here instead", EinsimWarning, stacklevel=2)
            return None
        if now >= next_dead_check:
            fail_dead_trials(study, rdb)
            next_dead_check = now + DEAD_CHECK_S
        time.sleep(WAIT_POLL_S)


def _records(study) -> list[TrialRecord]:
    records = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        params = t.params or dict(t.system_attrs.get("fixed_params") or {})
        wall = 0.0
        if t.datetime_start and t.datetime_complete:
            wall = (t.datetime_complete - t.datetime_start).total_seconds()
        records.append(TrialRecord(
            number=t.number, state=t.state.name, config=params,
            measured_s=t.value if t.state.name == "COMPLETE" else None,
            predicted_s=attrs.get("predicted_s"), failure=attrs.get("failure", "") or "",
            failure_kind=attrs.get("failure_kind", "") or "",
            # A trial killed after timing its config but before saving the time evaluated nothing.
            evaluated=bool(attrs.get("evaluated")) and (t.state.name == "COMPLETE" or bool(attrs.get("failure"))),
            duplicate_of=attrs.get("duplicate_of"), worker=attrs.get("worker", ""), wall_s=wall,
            seeded=attrs.get("seeded", "") or ""))
    return records


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
    import optuna

    started = time.perf_counter()
    _check_tune_arguments(trials=trials, seeds=seeds, seed=seed, timeout_s=timeout_s, stop_below_s=stop_below_s)
    space = build_space(kernel, problem, target)
    allowed = space.keys()
    default_key = config_key(space.default)
    default_params = config_dict(space.default)
    default_in_space = all(default_params.get(f) in space.choices[f] for f in space.fields)
    if default_in_space and default_key not in allowed:
        allowed_with_default = set(allowed) | {default_key}
    else:
        allowed_with_default = set(allowed)

    if evaluator is None:
        evaluator = PredictionEvaluator(space) if dry_run else GpuEvaluator(kernel, problem)
    source = getattr(evaluator, "source", "custom")
    gpu = gpu_name or getattr(evaluator, "gpu_name", None) or ("simulator" if dry_run else "unknown")
    mode = ("exhaustive" if exhaustive else "guided") + ("/dry-run" if dry_run else "")
    name = study_name or default_study_name(kernel, problem, space.target, dry_run=dry_run, exhaustive=exhaustive)
    budget = len(allowed) if exhaustive else min(len(allowed), trials or default_budget(len(allowed)))
    n_seeds = len(allowed) if exhaustive else min(budget, seeds if seeds is not None
                                                  else default_seed_count(budget, len(allowed)))
    rdb = open_storage(storage)
    sampler = make_guided_sampler(space, allowed, seed=seed, n_startup=n_seeds + 1)

    meta = {"kernel": space.kernel, "problem": problem_tag(problem), "target": space.target, "gpu": gpu,
            "objective": source}
    with quiet_optuna():
        try:
            study = optuna.create_study(storage=rdb, study_name=name, direction="minimize", sampler=sampler)
            creator = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler)
            creator = False
    if creator:
        for key, value in meta.items():
            study.set_user_attr(key, value)
        study.set_user_attr("space_size", len(allowed))
        with quiet_optuna():
            if default_in_space:
                study.enqueue_trial(default_params, user_attrs={"seeded": "default"}, skip_if_exists=True)
            for key in allowed[:n_seeds]:
                if key != default_key:
                    study.enqueue_trial(sampler.params_of[key], user_attrs={"seeded": "simulator"},
                                        skip_if_exists=True)
    else:
        for key, value in meta.items():
            stored = study.user_attrs.get(key)
            if stored is not None and stored != value:
                raise ConfigError(f"study {name!r} in {redact_url(resolve_storage_url(storage))} was made with {key}="
                                  f"{stored!r}, this run has {value!r}: its times cannot be mixed; pass "
                                  f"another --study name")

    by_key = space.by_key()

    def objective(trial) -> float:
        params = {name_: trial.suggest_categorical(name_, list(space.choices[name_])) for name_ in space.fields}
        key = config_key(params)
        trial.set_user_attr("config_key", key)
        trial.set_user_attr("source", source)
        found = by_key.get(key)
        if found is not None:
            trial.set_user_attr("predicted_s", _attr(found[1].time_s))
        if key not in allowed_with_default:
            config = space.config_from_params(params)
            from einsim.autotune.predict import predict_kernel

            reasons = "; ".join(predict_kernel(space.kernel, config, problem, target).reasons) or "not in the space"
            trial.set_user_attr("failure", f"the simulator rejects it: {reasons}")
            trial.set_user_attr("failure_kind", "does_not_fit")
            raise TrialFailed(reasons)
        peer = _wait_for_peer(study, rdb, trial.number, key)
        if peer is not None:
            trial.set_user_attr("duplicate_of", peer.number)
            if peer.state.name == "COMPLETE":
                return float(peer.value)
            trial.set_user_attr("failure", peer.user_attrs.get("failure"))
            trial.set_user_attr("failure_kind", peer.user_attrs.get("failure_kind"))
            raise TrialFailed(str(peer.user_attrs.get("failure")))
        config = space.config_from_params(params)
        measurement = evaluator(config)
        trial.set_user_attr("evaluated", True)
        for attr in ("first_call_s", "bench_s", "error", "timing"):
            trial.set_user_attr(attr, _attr(getattr(measurement, attr)))
        if not measurement.ok:
            trial.set_user_attr("failure", measurement.failure or "no time")
            trial.set_user_attr("failure_kind", measurement.failure_kind or "runtime")
            if measurement.failure_kind == "fatal":
                raise FatalTuningError(
                    f"config {params} broke the GPU context ({measurement.failure}); every finished trial "
                    f"is saved in study {name!r}: rerun the same command to resume")
            raise TrialFailed(measurement.failure)
        return float(measurement.time_s)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=budget, desc=f"{space.kernel} {mode}", unit="config", dynamic_ncols=True)

    def after_trial(study_, trial) -> None:
        evaluated, tried = _evaluated_count(study_)
        if bar is not None:
            bar.n = min(evaluated, budget)
            best = None
            with contextlib.suppress(ValueError):
                best = study_.best_value
            if best is not None:
                bar.set_postfix_str(f"best {best * 1e6:.1f} us", refresh=False)
            bar.refresh()
        if evaluated >= budget or allowed_with_default <= tried:
            study_.stop()
        if stop_below_s is not None and trial.value is not None and trial.value <= stop_below_s:
            study_.stop()

    def goal_reached() -> bool:
        return stop_below_s is not None and any(
            t.value is not None and t.value <= stop_below_s
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    interrupted = False
    try:
        evaluated, _ = _evaluated_count(study)
        if bar is not None:
            bar.n = min(evaluated, budget)
            bar.refresh()
        # Run what is missing; then, while the only configs left are held by other workers'
        # RUNNING trials, wait for them (bounded): a dead one is failed and its config run here,
        # so a killed run's last config is never left as "74 of 75 configs run".
        settle_deadline = time.monotonic() + PEER_WAIT_LIMIT_S
        for _ in range(1000):
            fail_dead_trials(study, rdb)
            evaluated, tried = _evaluated_count(study)
            left_s = None if timeout_s is None else timeout_s - (time.perf_counter() - started)
            if evaluated >= budget or goal_reached() or (left_s is not None and left_s <= 0):
                break
            if not allowed_with_default <= tried:
                with quiet_optuna():
                    study.optimize(objective, n_trials=4 * budget + 20, timeout=left_s,
                                   catch=(TrialFailed,), callbacks=[after_trial], gc_after_trial=False)
                continue
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if not running:
                break
            if time.monotonic() > settle_deadline:
                warnings.warn(f"tuning study {name!r}: stopped waiting after {PEER_WAIT_LIMIT_S:.0f} s for "
                              f"trial(s) {', '.join(str(t.number) for t in running)} of other workers "
                              f"({', '.join(sorted({str(t.user_attrs.get('worker', '?')) for t in running}))}); "
                              f"rerun the same command to pick up their configs if they died", EinsimWarning,
                              stacklevel=2)
                break
            time.sleep(DEAD_CHECK_S)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()

    result = TuningResult(kernel=space.kernel, problem=problem, target=space.target, gpu=gpu, study_name=name,
                          storage=redact_url(resolve_storage_url(storage)), mode=mode, space_size=len(allowed),
                          rejected=len(space.rejected), budget=budget, trials=_records(study),
                          wall_s=time.perf_counter() - started, interrupted=interrupted)
    if not exhaustive:
        result.exhaustive_best_s = exhaustive_best(rdb, kernel, problem, space.target, dry_run=dry_run)
    if not interrupted:
        result.retest = retest_best_and_default(evaluator, space, result)
    if interrupted:
        raise TuningInterrupted(result)
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


def exhaustive_best(storage, kernel: str, problem: Problem, target: str, *,
                    dry_run: bool = False) -> float | None:
    """Best time of the exhaustive study for the same problem in `storage`, if one was run."""
    import optuna

    name = default_study_name(kernel, problem, target, dry_run=dry_run, exhaustive=True)
    with quiet_optuna():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            return float(study.best_value)
        except (KeyError, ValueError):
            return None


def load_result(kernel: str, problem: Problem, target: str = "h100-sxm", *, storage: str | None = None,
                study_name: str | None = None, dry_run: bool = False, exhaustive: bool = False) -> TuningResult:
    """Read a study back without running anything (what a finished or killed run left)."""
    import optuna

    space = build_space(kernel, problem, target)
    name = study_name or default_study_name(kernel, problem, space.target, dry_run=dry_run, exhaustive=exhaustive)
    rdb = open_storage(storage)
    with quiet_optuna():
        try:
            study = optuna.load_study(study_name=name, storage=rdb)
        except KeyError:
            raise ConfigError(f"no study {name!r} in {redact_url(resolve_storage_url(storage))}") from None
    return TuningResult(kernel=space.kernel, problem=problem, target=space.target,
                        gpu=study.user_attrs.get("gpu", ""), study_name=name, storage=redact_url(resolve_storage_url(storage)),
                        mode=("exhaustive" if exhaustive else "guided") + ("/dry-run" if dry_run else ""),
                        space_size=len(space.ranked), rejected=len(space.rejected),
                        budget=len(space.ranked), trials=_records(study))
