"""Many tuning workers share one study through a real PostgreSQL server (started by .ci/run):
two worker processes run the `--dry-run` objective against one study and together run every
config once, with no trial lost or duplicated. Never mocked: skipped only without the server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # worker processes: several seconds each
URL = os.environ.get("EINSIM_TEST_POSTGRES_URL")
if not URL:
    pytest.skip("EINSIM_TEST_POSTGRES_URL is unset (.ci/run starts PostgreSQL and sets it)", allow_module_level=True)

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg2")

from einsim.autotune import build_space, config_key  # noqa: E402
from einsim.problem import Problem  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROBLEM = Problem(batch=4, q_heads=16, kv_heads=16, q_len=4096, kv_len=4096, head_dim=128, causal=True)
WORKERS = 2

# Each worker imports everything, says it is ready, waits for the go file (so both are running
# before either starts), then tunes: the einsim autotune CLI's own code path, --dry-run objective.
WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from einsim.cli import main
    url, study, trials, go, seed = sys.argv[1:6]
    import einsim.autotune.study, optuna, sqlalchemy  # the slow imports, before the start line
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.02)
    sys.exit(main(["autotune", "--kernel", "attention-fwd", "--shape", "4,16,4096,128", "--causal",
                   "--dry-run", "--storage", url, "--study", study, "--trials", trials, "--seed", seed,
                   "--no-progress", "--no-export"]))
""")


@pytest.fixture
def fresh_url():
    """A new, empty database on the server for one test (the role may create databases), so the
    workers also race to create Optuna's tables, as they do on a user's first run."""
    import sqlalchemy

    name = f"einsim_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        sqlalchemy.engine.Engine.dispose(admin)
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _run_workers(url: str, study: str, trials: int, go: Path) -> list[subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, url, study, str(trials), str(go), str(seed)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for seed in range(WORKERS)]
    for process in processes:
        line = process.stdout.readline()
        assert line.strip() == "ready", process.stderr.read()[-3000:]
    go.touch()
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        outputs.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return outputs


def test_two_workers_share_one_study_without_duplicating_a_config(tmp_path: Path, fresh_url: str) -> None:
    study_name = "shared"
    space = build_space("attention-fwd", PROBLEM, "h100-sxm")
    trials = 40
    outputs = _run_workers(fresh_url, study_name, trials, tmp_path / "go")
    for output in outputs:
        assert output.returncode == 0, output.stderr[-3000:]
    study = optuna.load_study(study_name=study_name, storage=fresh_url)
    if True:  # one block: the checks below read the study loaded above
        all_trials = study.get_trials()
        assert len({t.number for t in all_trials}) == len(all_trials)  # unique numbers
        evaluated = [t for t in all_trials if t.user_attrs.get("evaluated")]
        keys = [t.user_attrs["config_key"] for t in evaluated]
        # Each config was run once, by one worker, and the workers stopped at the shared budget
        # (a worker that was mid-trial when the other reached it may finish one more).
        assert len(keys) == len(set(keys))
        assert trials <= len(evaluated) <= trials + WORKERS - 1
        assert set(keys) <= set(space.keys())
        workers = {t.user_attrs["worker"] for t in evaluated}
        assert len(workers) == WORKERS, f"only {workers} ran trials"
        # Both reported the same study: every trial either ran its config or reused another's.
        for t in all_trials:
            assert t.state.name in ("COMPLETE", "FAIL"), t
            assert t.user_attrs.get("evaluated") or t.user_attrs.get("duplicate_of") is not None \
                or t.state.name == "FAIL"
        # The enqueued seeds (default + simulator's best) ran first, once.
        seeded = [t for t in all_trials if t.user_attrs.get("seeded")]
        assert len({config_key(t.params) for t in seeded}) == len(seeded) >= 2
    optuna.storages.RDBStorage(fresh_url).engine.dispose()


def test_a_second_run_of_a_finished_shared_study_runs_nothing(tmp_path: Path, fresh_url: str) -> None:
    first = _run_workers(fresh_url, "finished", 6, tmp_path / "go")
    assert all(o.returncode == 0 for o in first), [o.stderr[-2000:] for o in first]
    before = len(optuna.load_study(study_name="finished", storage=fresh_url).get_trials())
    outputs = _run_workers(fresh_url, "finished", 6, tmp_path / "go2")
    assert all(o.returncode == 0 for o in outputs)
    assert len(optuna.load_study(study_name="finished", storage=fresh_url).get_trials()) == before
