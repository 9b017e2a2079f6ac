"""Many workers, one study: a trial waits for a lower-numbered worker's trial of the same config
and reuses its result, never for longer than PEER_WAIT_LIMIT_S, failing dead workers' trials on
the way; and how many configs a study has really run. Used by tune() (autotune/study.py)."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

from einsim.autotune.sampler import tried_keys
from einsim.autotune.storage import fail_dead_trials
from einsim.errors import EinsimWarning

WAIT_POLL_S = 0.05  # how often a worker checks on lower-numbered trials of other workers
DEAD_CHECK_S = 1.0  # how often a waiting worker looks for dead RUNNING trials
# The longest a worker waits for another worker's trial that runs the same config (a GPU trial
# compiles and times one config: seconds, a minute at most); after it, it runs the config itself.
PEER_WAIT_LIMIT_S = 600.0


def attr_value(value: Any) -> Any:
    """User attrs are JSON: no NaN or inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluated_count(study) -> tuple[int, set[str]]:
    """(configs this study has run, keys of every config tried)."""
    import optuna

    State = optuna.trial.TrialState
    evaluated = 0
    for t in study.get_trials(deepcopy=False, states=(State.COMPLETE, State.FAIL)):
        if t.user_attrs.get("evaluated") and (t.state == State.COMPLETE or t.user_attrs.get("failure")):
            evaluated += 1
    return evaluated, tried_keys(study, waiting=False)


def wait_for_peer(study, rdb, number: int, key: str, limit_s: float = PEER_WAIT_LIMIT_S):
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
