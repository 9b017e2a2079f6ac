"""Tuning storages after a worker died: dead RUNNING trials are failed on resume whatever their
heartbeat state, so a resumed study never waits on them and reruns their configs; every wait on
another worker is bounded. The stuck states are built directly in a SQLite storage (no kills, no
timing luck)."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from einsim.autotune import build_space, config_key, default_study_name, tune  # noqa: E402
from einsim.autotune import storage as storage_module  # noqa: E402
from einsim.autotune.space import config_dict  # noqa: E402
from einsim.autotune.storage import (  # noqa: E402
    GRACE_PERIOD_S,
    choose_postgres_driver,
    dead_trials,
    fail_dead_trials,
    open_storage,
    worker_identity,
)
from einsim.autotune.peers import wait_for_peer  # noqa: E402
from einsim.errors import ConfigError, EinsimWarning  # noqa: E402
from einsim.problem import Problem  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DECODE = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)
State = optuna.trial.TrialState


@pytest.fixture
def tmp_path(fast_tmp_path: Path) -> Path:
    """Every test here keeps its files (SQLite studies, cache files) in memory: conftest.py."""
    return fast_tmp_path


def _study(tmp_path: Path, trials: int, *, exhaustive: bool = False):
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    result = tune("decode", DECODE, dry_run=True, storage=storage, trials=trials, seed=0, exhaustive=exhaustive)
    rdb = open_storage(storage)
    return storage, rdb, optuna.load_study(study_name=result.study_name, storage=rdb)


def _add_running(study, *, started_ago_s: float, config: dict | None = None, heartbeat: bool = False,
                 worker: dict | None = None, evaluated: bool = False) -> int:
    """A RUNNING trial as a killed worker leaves it: started `started_ago_s` ago, with or without
    the config it was running, with or without a heartbeat (recorded now), by another machine's
    worker unless `worker` says otherwise."""
    attrs = dict(worker or {"worker": "elsewhere:1", "worker_ns": "another-machine"})
    if config is not None:
        attrs["config_key"] = config_key(config)
    if evaluated:
        attrs["evaluated"] = True
    trial = optuna.trial.create_trial(state=State.RUNNING, user_attrs=attrs)
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
    assert time.monotonic() - started < 20  # it used to wait up to an hour in wait_for_peer
    assert len(result.evaluated) == 6
    failed = {t.number: t for t in study.get_trials(states=(State.FAIL,))}
    assert stuck in failed and "never wrote a heartbeat" in failed[stuck].user_attrs["stale"]


@pytest.mark.timeout(60)
def test_a_killed_exhaustive_study_reruns_its_killed_config(tmp_path: Path) -> None:
    space = build_space("decode", DECODE, "h100-sxm")
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    name = default_study_name("decode", DECODE, "h100-sxm", dry_run=True, exhaustive=True)
    study = optuna.create_study(storage=open_storage(storage), study_name=name)
    distributions = {field: optuna.distributions.CategoricalDistribution(list(values))
                     for field, values in space.choices.items()}
    # As a kill leaves it: every config run but the last, held by a RUNNING trial that never
    # wrote a heartbeat (it stayed RUNNING for good, and reruns said "35 of 36 configs run"),
    # killed after timing its config but before saving the time.
    *done, (killed, _) = space.ranked
    study.add_trials([optuna.trial.create_trial(
        params=config_dict(config), distributions=distributions, value=prediction.time_s,
        user_attrs={"config_key": config_key(config), "evaluated": True}) for config, prediction in done])
    _add_running(study, started_ago_s=3600, config=killed, evaluated=True)
    result = tune("decode", DECODE, dry_run=True, storage=storage, exhaustive=True)
    keys = {config_key(t.config) for t in result.completed}
    assert len(keys) == space.size and config_key(killed) in keys
    evaluated = [config_key(t.config) for t in result.evaluated]  # the killed trial is not one
    assert len(evaluated) == len(set(evaluated)) == space.size


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
        assert wait_for_peer(study, rdb, peer + 1, config_key(config), limit_s=0.3) is None
    assert time.monotonic() - started < 5


def test_a_dead_worker_on_this_machine_is_known_at_once(tmp_path: Path) -> None:
    _, rdb, study = _study(tmp_path, trials=2)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, timeout=60, check=True)
    me = worker_identity()
    if not me["worker_ns"]:
        pytest.skip("no PID namespace id on this platform: liveness by heartbeat only")
    host = me["worker"].rpartition(":")[0]
    dead = _add_running(study, started_ago_s=0, heartbeat=True,
                        worker={"worker": f"{host}:{gone.stdout.strip()}", "worker_ns": me["worker_ns"]})
    alive = _add_running(study, started_ago_s=0, heartbeat=True, worker=me)
    found = {t.number: t.reason for t in dead_trials(study, rdb)}
    assert set(found) == {dead} and "no longer running" in found[dead]
    assert alive not in found


WORKER = textwrap.dedent("""
    import sys, time
    from einsim.autotune import build_space, tune
    from einsim.autotune.evaluate import PredictionEvaluator
    from einsim.problem import Problem
    problem = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)
    simulator = PredictionEvaluator(build_space("decode", problem, "h100-sxm"))
    def timed(config):
        time.sleep(0.01)
        return simulator(config)
    timed.source = "simulator"
    # Every trial is a queued one: the race was in popping them.
    result = tune("decode", problem, dry_run=True, storage=sys.argv[1], trials=12, seeds=12, evaluator=timed,
                  seed=int(sys.argv[2]))
    print(len(result.evaluated))
""")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_workers_on_one_sqlite_file_never_time_a_config_twice(tmp_path: Path) -> None:
    """Optuna's pop of a queued trial is a read then a write; on SQLite both workers used to pop
    the same trial and one died with "Cannot tell a COMPLETE trial" (2 runs in 3)."""
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, storage, str(seed)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in (0, 1)]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=100))
    finally:
        for worker in workers:
            worker.kill()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert all(int(out.split()[-1]) >= 12 for out, _ in outputs)
    study = optuna.load_study(study_name=default_study_name("decode", DECODE, "h100-sxm", dry_run=True),
                              storage=storage)
    timed = [t.user_attrs["config_key"] for t in study.get_trials() if t.user_attrs.get("evaluated")]
    assert len(timed) == len(set(timed)) >= 12


def test_a_plain_postgresql_url_gets_the_installed_driver(monkeypatch) -> None:
    installed: set[str] = set()
    monkeypatch.setattr(storage_module.importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)
    with pytest.raises(ConfigError, match=r"no PostgreSQL driver.*einsim\[postgres\]"):
        choose_postgres_driver("postgresql://u:secret@db/tuning")
    installed.add("psycopg")
    assert choose_postgres_driver("postgresql://u@db/t") == "postgresql+psycopg://u@db/t"
    installed.add("psycopg2")
    assert choose_postgres_driver("postgresql://u@db/t") == "postgresql+psycopg2://u@db/t"
    assert choose_postgres_driver("postgresql+psycopg://u@db/t") == "postgresql+psycopg://u@db/t"
    assert choose_postgres_driver("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.timeout(60)
def test_a_server_that_accepts_and_never_answers_fails_within_the_connect_timeout(monkeypatch) -> None:
    pytest.importorskip("psycopg2")
    monkeypatch.setattr(storage_module, "CONNECT_TIMEOUT_S", 1)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    port = server.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match="connect timeout") as error:
            open_storage(f"postgresql://einsim:secret@127.0.0.1:{port}/tuning")
        assert time.monotonic() - started < 20
        assert "secret" not in str(error.value) and "***" in str(error.value)
        # `einsim roofline --tuning-db URL` reads through the same door (it hung too)
        from einsim.plots.measured import load_tuning_db

        started = time.monotonic()
        with pytest.raises(ConfigError, match="connect timeout"):
            load_tuning_db(f"postgresql://einsim:secret@127.0.0.1:{port}/tuning")
        assert time.monotonic() - started < 20
    finally:
        server.close()
        for connection in held:
            connection.close()


def test_sqlite_storage_in_a_missing_folder_or_on_a_folder_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        open_storage(str(tmp_path / "missing" / "tuning.db"))
    with pytest.raises(ConfigError, match="is a folder"):
        open_storage(str(tmp_path))
