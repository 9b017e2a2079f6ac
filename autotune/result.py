"""What a tuning study found: one TrialRecord per trial and the TuningResult tune() returns,
read back from the study's storage (so a resumed or killed run reports every trial);
load_result reads a study without running anything, exhaustive_best the baseline's best."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from einsim.autotune.naming import default_study_name
from einsim.autotune.space import build_space
from einsim.autotune.storage import open_storage, quiet_optuna, redact_url, resolve_storage_url
from einsim.errors import ConfigError
from einsim.problem import Problem


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


def trial_records(study) -> list[TrialRecord]:
    """Every trial of `study` as a TrialRecord (what tune() and load_result() report)."""
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
                        budget=len(space.ranked), trials=trial_records(study))
