"""Tuning storages: which RUNNING trials are dead, and failing them so their configs run again.

Optuna's `fail_stale_trials` only fails a trial whose heartbeat went silent; a worker killed
between creating its trial and writing the first heartbeat leaves a RUNNING trial with no
heartbeat at all, which Optuna keeps RUNNING for ever (and a resumed study would wait on it).
Here a RUNNING trial is dead when its last heartbeat is older than the grace period, or when it
has none and started longer ago than the grace period: a live worker writes its first heartbeat
as its trial starts, so a trial that has none after that long belongs to no live worker.
docs/reliability.md.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

# A worker records a heartbeat every HEARTBEAT_INTERVAL_S while its trial runs; a RUNNING trial
# silent for GRACE_PERIOD_S (or without any heartbeat that long after it started) is dead.
HEARTBEAT_INTERVAL_S = 5
GRACE_PERIOD_S = 20


@dataclass(frozen=True)
class DeadTrial:
    """A RUNNING trial that no live worker owns, and why it was judged dead."""

    number: int
    trial_id: int
    reason: str


def _heartbeats(rdb: Any, trial_ids: list[int]) -> tuple[datetime.datetime, dict[int, datetime.datetime]]:
    """(the database's clock now, trial id -> its last heartbeat), both naive in the database's
    clock, read from Optuna's `trial_heartbeats` table as Optuna's own stale check does."""
    import sqlalchemy
    from optuna.storages._rdb import models

    session = rdb.scoped_session()
    try:
        now = session.execute(sqlalchemy.func.now()).scalar()
        rows = (session.query(models.TrialHeartbeatModel.trial_id, models.TrialHeartbeatModel.heartbeat)
                .filter(models.TrialHeartbeatModel.trial_id.in_(trial_ids)).all()) if trial_ids else []
    finally:
        session.close()
    return now.replace(tzinfo=None), {trial_id: beat.replace(tzinfo=None) for trial_id, beat in rows}


def dead_trials(study: Any, rdb: Any, grace_period_s: float = GRACE_PERIOD_S) -> list[DeadTrial]:
    """The study's RUNNING trials that no live worker owns (see the module docstring).

    `rdb` is the RDBStorage the study lives in; an in-memory storage (one process) has none."""
    import optuna

    if not isinstance(rdb, optuna.storages.RDBStorage):
        return []
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not running:
        return []
    db_now, beats = _heartbeats(rdb, [t._trial_id for t in running])
    local_now = datetime.datetime.now()  # datetime_start is written in the worker's local clock
    grace = datetime.timedelta(seconds=grace_period_s)
    dead = []
    for trial in running:
        beat = beats.get(trial._trial_id)
        if beat is not None:
            if db_now - beat > grace:
                dead.append(DeadTrial(trial.number, trial._trial_id,
                                      f"no heartbeat for {(db_now - beat).total_seconds():.0f} s"))
        elif trial.datetime_start is None or local_now - trial.datetime_start > grace:
            age = "" if trial.datetime_start is None else \
                f" {(local_now - trial.datetime_start).total_seconds():.0f} s after it started"
            dead.append(DeadTrial(trial.number, trial._trial_id, f"never wrote a heartbeat{age}"))
    return dead


def fail_dead_trials(study: Any, rdb: Any, grace_period_s: float = GRACE_PERIOD_S) -> list[DeadTrial]:
    """Mark every dead RUNNING trial FAIL (its config becomes free to run again) and say why in
    its `stale` user attr; returns the trials this call failed. A trial another process finished
    or failed meanwhile is left alone."""
    import optuna

    failed = []
    for trial in dead_trials(study, rdb, grace_period_s):
        try:
            rdb.set_trial_user_attr(trial.trial_id, "stale", trial.reason)
            if rdb.set_trial_state_values(trial.trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker (or another resuming one) finished it first
    return failed


def record_heartbeat(study: Any, trial_id: int) -> None:
    """Record a heartbeat for `trial_id` now, when the study's storage keeps heartbeats."""
    from optuna.storages._heartbeat import BaseHeartbeat

    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        storage.record_heartbeat(trial_id)
