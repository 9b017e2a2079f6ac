"""Tuning storages after a worker died: dead RUNNING trials are failed on resume whatever their
heartbeat state, so a resumed study never waits on them and reruns their configs; every wait on
another worker is bounded. The stuck states are built directly in a SQLite storage (no kills, no
timing luck)."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from einsim.autotune import build_space, config_key, tune  # noqa: E402
from einsim.autotune.storage import GRACE_PERIOD_S, dead_trials, fail_dead_trials  # noqa: E402
from einsim.autotune.study import _wait_for_peer, open_storage  # noqa: E402
from einsim.errors import EinsimWarning  # noqa: E402
from einsim.problem import Problem  # noqa: E402

DECODE = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)
State = optuna.trial.TrialState


def _study(tmp_path: Path, trials: int, *, exhaustive: bool = False):
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    result = tune("decode", DECODE, dry_run=True, storage=storage, trials=trials, seed=0, exhaustive=exhaustive)
    rdb = open_storage(storage)
    return storage, rdb, optuna.load_study(study_name=result.study_name, storage=rdb)


def _add_running(study, *, started_ago_s: float, config: dict | None = None, heartbeat: bool = False) -> int:
    """A RUNNING trial as a killed worker leaves it: started `started_ago_s` ago, with or without
    the config it was running, with or without a heartbeat (recorded now)."""
    trial = optuna.trial.create_trial(state=State.RUNNING, user_attrs={} if config is None
                                      else {"config_key": config_key(config), "worker": "elsewhere:1"})
    trial.datetime_start = datetime.datetime.now() - datetime.timedelta(seconds=started_ago_s)
    study.add_trial(trial)
    number = max(t.number for t in study.get_trials(deepcopy=False))
    if heartbeat:
        study._storage.record_heartbeat(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
    return number


@pytest.mark.timeout(60)
def test_a_trial_killed_before_its_first_heartbeat_does_not_stall_the_resume(tmp_path: Path) -> None:
    storage, _, study = _study(tmp_path, trials=3)
    stuck = _add_running(study, started_ago_s=3600)  # no heartbeat, no config: "choosing" for ever
    started = time.monotonic()
    result = tune("decode", DECODE, dry_run=True, storage=storage, trials=6, seed=0)
    assert time.monotonic() - started < 20  # it used to wait up to an hour in _wait_for_peer
    assert len(result.evaluated) == 6
    failed = {t.number: t for t in study.get_trials(states=(State.FAIL,))}
    assert stuck in failed and "never wrote a heartbeat" in failed[stuck].user_attrs["stale"]


@pytest.mark.timeout(60)
def test_a_killed_exhaustive_study_reruns_its_killed_config(tmp_path: Path) -> None:
    space = build_space("decode", DECODE, "h100-sxm")
    storage, _, study = _study(tmp_path, trials=space.size, exhaustive=True)
    done = study.get_trials(states=(State.COMPLETE,))
    assert len(done) == space.size
    # The killed trial held the last config: drop its COMPLETE twin by renaming the study.
    last = max(done, key=lambda t: t.number)
    killed_key = last.user_attrs["config_key"]
    rebuilt = optuna.create_study(storage=storage, study_name=study.study_name + "-rebuilt")
    for key, value in study.user_attrs.items():
        rebuilt.set_user_attr(key, value)
    for t in done:
        if t.number != last.number:
            rebuilt.add_trial(t)
    _add_running(rebuilt, started_ago_s=3600, config=last.params)  # 35 of 36 run, one RUNNING for good
    result = tune("decode", DECODE, dry_run=True, storage=storage, exhaustive=True,
                  study_name=study.study_name + "-rebuilt")
    keys = {config_key(t.config) for t in result.completed}
    assert len(keys) == space.size and killed_key in keys  # not "35 of 36 configs run" again


def test_which_running_trials_are_dead(tmp_path: Path) -> None:
    _, rdb, study = _study(tmp_path, trials=2)
    config = build_space("decode", DECODE, "h100-sxm").default
    fresh = _add_running(study, started_ago_s=1)  # still sampling: alive
    old_silent = _add_running(study, started_ago_s=GRACE_PERIOD_S + 5)  # killed before its first heartbeat
    old_beating = _add_running(study, started_ago_s=3600, config=config, heartbeat=True)
    dead = {t.number: t.reason for t in dead_trials(study, rdb)}
    assert set(dead) == {old_silent}
    assert "never wrote a heartbeat" in dead[old_silent]
    assert [t.number for t in fail_dead_trials(study, rdb)] == [old_silent]
    assert fail_dead_trials(study, rdb) == []  # already failed: nothing to do
    states = {t.number: t.state for t in study.get_trials()}
    assert states[fresh] == State.RUNNING and states[old_beating] == State.RUNNING
    assert states[old_silent] == State.FAIL


@pytest.mark.timeout(30)
def test_waiting_on_a_live_peer_is_bounded_and_says_so(tmp_path: Path) -> None:
    _, rdb, study = _study(tmp_path, trials=2)
    config = build_space("decode", DECODE, "h100-sxm").ranked[-1][0]
    peer = _add_running(study, started_ago_s=1, config=config, heartbeat=True)  # alive, same config
    started = time.monotonic()
    with pytest.warns(EinsimWarning, match=f"waited 0 s for trial {peer}"):
        assert _wait_for_peer(study, rdb, peer + 1, config_key(config), limit_s=0.3) is None
    assert time.monotonic() - started < 5
