"""Tuning storages: opening them safely, and failing the RUNNING trials of dead workers.

`open_storage` turns a URL or path into an Optuna storage with heartbeats, bounded waits (a
PostgreSQL connect timeout, SQLite's busy timeout), the PostgreSQL driver that is installed, and
SQLite transactions that take the write lock up front (Optuna's compare-and-set of a queued
trial is only atomic that way: two workers on one file would otherwise pop the same trial).

Optuna's `fail_stale_trials` only fails a trial whose heartbeat went silent; a worker killed
between creating its trial and writing the first heartbeat leaves a RUNNING trial with no
heartbeat at all, which Optuna keeps RUNNING for ever (and a resumed study would wait on it).
Here a RUNNING trial is dead when its last heartbeat is older than the grace period, or when it
has none and started longer ago than the grace period (a live worker writes its first heartbeat
as its trial starts), or at once when its worker was a process on this machine that is gone.
docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterator

from einsim.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///einsim-tuning.db"
# A worker records a heartbeat every HEARTBEAT_INTERVAL_S while its trial runs; a RUNNING trial
# silent for GRACE_PERIOD_S (or without any heartbeat that long after it started) is dead.
HEARTBEAT_INTERVAL_S = 5
GRACE_PERIOD_S = 20
# Bounded waits of the storage itself: a PostgreSQL server that accepts but never answers, and a
# SQLite file another worker holds the write lock of.
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_S = 60


# ------------------------------------------------------------------------------------------
# Opening a storage
# ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO logging (one line per study and trial) off for the duration."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


@contextlib.contextmanager
def no_experimental_warnings() -> Iterator[None]:
    """Optuna's ExperimentalWarning (heartbeats, constant_liar, ...) off for the duration."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def resolve_storage_url(storage: str | None) -> str:
    """None -> the default SQLite file in the working directory; a plain path -> a SQLite URL."""
    if not storage:
        return DEFAULT_STORAGE
    if storage == ":memory:":
        return storage
    if "://" not in storage:
        return f"sqlite:///{os.path.abspath(os.path.expanduser(storage))}"
    return storage


def redact_url(url: str) -> str:
    """The URL as messages may show it: the password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: shown as given, it has no password field
        return url


POSTGRES_DRIVERS = (("psycopg2", "psycopg2"), ("psycopg", "psycopg"))  # (SQLAlchemy name, module)


def choose_postgres_driver(url: str) -> str:
    """A plain `postgresql://` URL with the driver that is installed: psycopg2 (what the
    `postgres` extra installs) if present, else psycopg 3. SQLAlchemy's own default differs between
    its versions (psycopg2 up to 2.0, psycopg 3 from 2.1), so a plain URL failed with the other
    installed. A URL that names its driver (`postgresql+psycopg://`) is kept as it is."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    for driver, module in POSTGRES_DRIVERS:
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}{sep}{rest}"
    raise ConfigError(f"storage {redact_url(url)}: no PostgreSQL driver is installed: `pip install "
                      f"'einsim[postgres]'` (psycopg2) or `pip install 'psycopg[binary]'` (psycopg 3)")


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if url.startswith(("postgresql", "postgres")):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    if url.startswith("mysql"):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _sqlite_write_lock_up_front(engine: Any) -> None:
    """Every SQLite transaction starts with BEGIN IMMEDIATE (SQLAlchemy's documented recipe).

    pysqlite opens a transaction only at the first write, so Optuna's "read the trial, still
    WAITING? set it RUNNING" runs its read outside any lock and two workers both pop one queued
    trial (then one dies with "Cannot tell a COMPLETE trial"). Taking the write lock first makes
    the read-and-set atomic; the busy timeout bounds the wait for the lock."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners get them when reopened


def open_storage(storage: str | None) -> Any:
    """An Optuna storage for `storage` (a URL, a path, None for the default file, ":memory:"),
    with heartbeats so trials of a killed worker are failed and their configs run again; bad
    URLs, missing drivers and unreachable servers become a ConfigError naming the URL (its
    password hidden) within CONNECT_TIMEOUT_S."""
    import optuna

    if storage == ":memory:":  # one process, nothing kept: replays and tests
        return optuna.storages.InMemoryStorage()
    url = choose_postgres_driver(resolve_storage_url(storage))
    shown = redact_url(url)
    if url.startswith("sqlite:///"):
        _check_sqlite_path(url[len("sqlite:///"):], shown)
    try:
        for attempt in range(5):
            try:
                with quiet_optuna(), no_experimental_warnings():
                    rdb = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                                     heartbeat_interval=HEARTBEAT_INTERVAL_S,
                                                     grace_period=GRACE_PERIOD_S)
                break
            except Exception as error:
                # Workers starting together on a fresh database race to create Optuna's tables:
                # the losers see a duplicate-key or already-exists error; once the winner is done
                # the tables are there. Anything else is a real error.
                text = str(error).lower()
                racing = any(marker in text for marker in ("already exists", "duplicate key", "unique constraint",
                                                           "database is locked"))
                if not racing or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    except ImportError as error:
        raise ConfigError(f"storage {shown}: {error} (PostgreSQL needs `pip install 'einsim[postgres]'`)") from None
    except Exception as error:  # sqlalchemy's ArgumentError, OperationalError, ...
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        first = lines[0] if lines else type(error).__name__
        if "timeout" in str(error).lower():
            first += f" (no answer within the {CONNECT_TIMEOUT_S} s connect timeout)"
        raise ConfigError(f"cannot open tuning storage {shown}: {first[:300]}") from None
    if url.startswith("sqlite"):
        _sqlite_write_lock_up_front(rdb.engine)
    return rdb


def _check_sqlite_path(path: str, shown: str) -> None:
    """A SQLite file's folder must exist and the file must not be a folder: said plainly instead
    of SQLAlchemy's "unable to open database file"."""
    if not path or path == ":memory:":
        return
    if os.path.isdir(path):
        raise ConfigError(f"storage {shown}: {path} is a folder; give a file name inside it, e.g. "
                          f"{os.path.join(path, 'einsim-tuning.db')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"storage {shown}: the folder {folder} does not exist; create it first")


# ------------------------------------------------------------------------------------------
# Workers and dead trials
# ------------------------------------------------------------------------------------------

def worker_identity() -> dict[str, str]:
    """This process as trials record it: `worker` (host:pid, shown in reports) and `worker_ns`
    (this machine's boot and PID namespace, so a PID is only ever checked on its own machine)."""
    return {"worker": f"{socket.gethostname()}:{os.getpid()}", "worker_ns": _pid_namespace()}


def _pid_namespace() -> str:
    boot = ""
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
    with contextlib.suppress(OSError):
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    return ""  # not Linux: liveness by heartbeat only


def _process_gone(user_attrs: dict[str, Any]) -> bool:
    """True when the trial's worker ran on this machine, in this PID namespace, and is gone."""
    here = worker_identity()
    if not here["worker_ns"] or user_attrs.get("worker_ns") != here["worker_ns"]:
        return False
    host, _, pid = str(user_attrs.get("worker", "")).rpartition(":")
    if host != here["worker"].rpartition(":")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


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
        if _process_gone(trial.user_attrs):
            dead.append(DeadTrial(trial.number, trial._trial_id,
                                  f"its worker {trial.user_attrs['worker']} is no longer running"))
        elif beat is not None:
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


def claim_trial(study: Any, trial_id: int) -> None:
    """First thing a worker does with a trial it started: say whose it is (`worker_identity`)
    and record a first heartbeat, so neither a slow sampler nor a kill leaves it ownerless."""
    from optuna.storages._heartbeat import BaseHeartbeat

    storage = study._storage
    for key, value in worker_identity().items():
        storage.set_trial_user_attr(trial_id, key, value)
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        storage.record_heartbeat(trial_id)
