"""The tuned-config store under damage and concurrency: a broken file is set aside, never
overwritten; concurrent exports lose nothing; readers never raise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from filelock import FileLock

from einsim.errors import ConfigError, EinsimWarning
from einsim.kernels import tuned
from einsim.kernels.registry import get_kernel
from einsim.kernels.tuned import export_best, shape_bucket, tuned_config
from einsim.problem import Problem

REPO = Path(__file__).resolve().parent.parent
DECODE = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)
SPEC = get_kernel("decode")
GPU = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path))
    monkeypatch.setattr(tuned, "TUNED_DIR", tmp_path / "shipped")  # nothing shipped in the way
    tuned.reload()
    yield tmp_path
    tuned.reload()


def _problem(kv_len: int) -> Problem:
    return Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=kv_len, head_dim=128)


def test_a_damaged_file_is_set_aside_never_overwritten(store: Path) -> None:
    default = SPEC.default_config(DECODE)
    for n in (1024, 4096, 16384):
        export_best("decode", _problem(n), GPU, default, measured_s=1e-4)
    path = store / "decode.json"
    damaged = path.read_text().replace("]", "]x", 1)  # one stray byte: the three entries unreadable
    path.write_text(damaged)
    with pytest.warns(EinsimWarning, match=r"decode.json: not a tuning-cache file .*set aside as .*corrupt-"):
        export_best("decode", DECODE, GPU, default, measured_s=9e-5)
    [aside] = store.glob("decode.json.corrupt-*")
    assert aside.read_text() == damaged  # kept as it was, for a person to repair
    assert len(json.loads(path.read_text())["entries"]) == 1
    assert not list(store.glob(".decode.json.*.tmp"))


def test_malformed_entries_are_carried_over_only_when_usable(store: Path) -> None:
    good = {"gpu": "h100-80gb-hbm3", "bucket": shape_bucket(_problem(1024)),
            "config": {"BLOCK_N": 64}, "device": GPU}
    (store / "decode.json").write_text(json.dumps({"kernel": "decode", "entries": [good, {"gpu": 5, "config": {}}]}))
    with pytest.warns(EinsimWarning, match="1 of 2 entries are malformed: set aside"):
        export_best("decode", DECODE, GPU, SPEC.default_config(DECODE), measured_s=1e-4)
    entries = json.loads((store / "decode.json").read_text())["entries"]
    assert [e["bucket"] for e in entries] == sorted([good["bucket"], shape_bucket(DECODE)])


@pytest.mark.parametrize("content", [
    '{"entries": 5}',
    '{"kernel": "decode", "entries": [{"gpu": 5, "config": {}}]}',
    '{"kernel": "decode", "entries": [{"device": ["x"], "bucket": {}, "config": {"BLOCK_N": 64}}]}',
    '[' * 100_000 + ']' * 100_000,  # RecursionError in json
    '{"kernel": "decode", "entries": [{"gpu": "h100-80gb-hbm3", "bucket": "%s", "config": {"BLOCK_N": "x"}}]}'
    % shape_bucket(DECODE),
    '{"kernel": "decode", "entries": [{"gpu": "h100-80gb-hbm3", "bucket": "%s", "config": {"nonsense": 1}}]}'
    % shape_bucket(DECODE),
    "\udcff",
])
def test_readers_never_raise(store: Path, content: str) -> None:
    (store / "decode.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EinsimWarning)
        assert tuned_config(SPEC, DECODE, GPU) is None
        assert SPEC.resolve_config(None, DECODE, None) == SPEC.default_config(DECODE)


def test_a_bad_file_warns_once_naming_it(store: Path) -> None:
    (store / "decode.json").write_text('{"entries": 5}')
    with pytest.warns(EinsimWarning, match="decode.json: not a tuning-cache file") as caught:
        tuned_config(SPEC, DECODE, GPU)
        tuned_config(SPEC, DECODE, GPU)
    assert len([w for w in caught if issubclass(w.category, EinsimWarning)]) == 1


def test_a_lock_held_too_long_is_a_named_error(store: Path, monkeypatch) -> None:
    monkeypatch.setattr(tuned, "LOCK_TIMEOUT_S", 0.2)
    with FileLock(str(store / "decode.json.lock")):
        with pytest.raises(ConfigError, match=r"decode.json.lock for 0 s; if no einsim is exporting, delete"):
            export_best("decode", DECODE, GPU, SPEC.default_config(DECODE), measured_s=1e-4)


def test_nan_times_are_written_as_null(store: Path) -> None:
    path = export_best("decode", DECODE, GPU, SPEC.default_config(DECODE), measured_s=1e-4,
                       default_s=float("nan"), predicted_s=float("inf"))
    entry = json.loads(path.read_text())["entries"][0]  # json.loads would accept NaN: check the text
    assert entry["default_s"] is None and entry["predicted_s"] is None and "NaN" not in path.read_text()


EXPORTER = textwrap.dedent("""
    import sys
    from einsim.kernels.registry import get_kernel
    from einsim.kernels.tuned import export_best
    from einsim.problem import Problem
    spec = get_kernel("decode")
    worker = int(sys.argv[1])
    for i in range(int(sys.argv[2])):
        problem = Problem(batch=1 << worker, q_heads=32, kv_heads=8, q_len=1, kv_len=1 << (4 + i), head_dim=128)
        export_best("decode", problem, "NVIDIA H100 80GB HBM3", spec.default_config(problem), measured_s=1e-4)
""")


@pytest.mark.timeout(120)
def test_processes_exporting_at_once_lose_no_entry(store: Path) -> None:
    """Four processes exporting at once lost 350 of 480 entries, and some died on the rename."""
    workers, per_worker = 4, 12
    env = dict(os.environ, PYTHONPATH=str(REPO), EINSIM_TUNED_DIR=str(store))
    processes = [subprocess.Popen([sys.executable, "-c", EXPORTER, str(w), str(per_worker)], env=env,
                                  stderr=subprocess.PIPE, text=True) for w in range(workers)]
    try:
        errors = [p.communicate(timeout=100)[1] for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert all(p.returncode == 0 for p in processes), errors
    entries = json.loads((store / "decode.json").read_text())["entries"]
    assert len(entries) == workers * per_worker
    assert not list(store.glob(".decode.json.*.tmp"))
