"""What every fuzz test asserts about one run of einsim on hostile input (tests/test_fuzz_*.py):
it returns normally or raises a named EinsimError; the CLI exits 0 or 2 with one error line and
never a traceback; no case runs past its time limit; nothing is written outside the output
folder; --json output is strict JSON. Shared settings keep every run deterministic."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from einsim.errors import EinsimError

# Deterministic (derandomize: the same examples on every run and machine), no example database
# on disk, no per-example deadline (CASE_LIMIT_S below is the bound), few examples per test.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=40, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])
CASE_LIMIT_S = 30.0  # one input, one run: far above any healthy case (they take 0.05-4 s)


class CaseTimeout(Exception):
    """A fuzz case ran past CASE_LIMIT_S: a hang, as far as the user can tell."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_LIMIT_S) -> Iterator[None]:
    """Raise CaseTimeout in this (main) thread after `seconds`; restores whatever timer was set
    before (pytest-timeout's) with the time it had left."""
    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"ran past {seconds:.0f} s")

    previous_handler = signal.signal(signal.SIGALRM, expire)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


def check_api(call: Callable[[], Any]) -> Any:
    """Run `call` within the time limit: its value, or None when it raised an EinsimError
    (whose message must be one non-empty line). Anything else fails the test with the input."""
    try:
        with time_limit():
            return call()
    except EinsimError as error:
        message = str(error)
        assert message.strip(), f"{type(error).__name__} with an empty message"
        assert "\n" not in message.strip(), f"a multi-line message: {message[:500]!r}"
        assert len(message) < 2000, f"a {len(message)}-character message (values must be echoed briefly)"
        return None


@dataclass
class CliRun:
    status: int
    out: str
    err: str
    seconds: float


def run_cli(argv: Sequence[str], folder: Path) -> CliRun:
    """`einsim ARGV` in this process with `folder` as the working directory, within the time
    limit, and the checks every command must pass whatever its input (see the module docstring).
    Files may be written in `folder` and nowhere else (checked on its parent, which only the
    test writes to)."""
    from einsim.cli import main

    outside_before = _listing(folder.parent, exclude=folder)
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit():
            try:
                status = main(list(argv))
            except SystemExit as stop:  # argparse: usage errors exit 2, --help/--version exit 0
                status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    except CaseTimeout:
        raise AssertionError(f"einsim {_shown(argv)} ran past the time limit (a hang)") from None
    except BaseException:
        raise AssertionError(f"einsim {_shown(argv)} raised instead of a named error:\n"
                             f"{traceback.format_exc()[-3000:]}") from None
    finally:
        os.chdir(cwd)
    run = CliRun(status, out.getvalue(), err.getvalue(), time.monotonic() - started)
    assert run.status in (0, 2), f"einsim {_shown(argv)} exited {run.status}: {run.err[-1500:]}"
    assert "Traceback" not in run.err, f"einsim {_shown(argv)} printed a traceback: {run.err[-3000:]}"
    if run.status == 2 and "usage:" not in run.err + run.out:  # usage (argparse, a bare command group) or:
        lines = [line for line in run.err.splitlines() if line.startswith("einsim ")]
        assert lines and ": error: " in lines[-1], f"einsim {_shown(argv)}: exit 2 without a named error: {run.err[-1500:]}"
        assert len(lines[-1]) < 2500, f"einsim {_shown(argv)}: a {len(lines[-1])}-character error line"
    if run.status == 0 and "--json" in argv:
        assert_strict_json(run.out, argv)
    assert _listing(folder.parent, exclude=folder) == outside_before, \
        f"einsim {_shown(argv)} wrote outside its folder: {_listing(folder.parent, exclude=folder) ^ outside_before}"
    return run


def assert_strict_json(text: str, argv: Sequence[str] = ()) -> Any:
    """`text` parses as JSON with no NaN or Infinity tokens (which Python's json accepts)."""
    def refuse(token: str) -> float:
        raise AssertionError(f"einsim {_shown(argv)}: --json printed the invalid token {token}")

    return json.loads(text, parse_constant=refuse)


def _listing(folder: Path, exclude: Path) -> set[str]:
    found = set()
    for root, dirs, files in os.walk(folder):
        if Path(root) == exclude:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if Path(root, d) != exclude]
        found.update(os.path.relpath(os.path.join(root, f), folder) for f in files)
    return found


def _shown(argv: Sequence[str]) -> str:
    text = " ".join(repr(a) if (" " in a or not a) else a for a in argv)
    return text if len(text) < 400 else text[:400] + "..."


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# -- hostile inputs --------------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "targets" / "presets"
LIBRARY = REPO / "einsum_cascades" / "library"
MODELS = REPO / "simulator" / "models"

# Values no option should choke on: empty, signs, NaN/inf, overflow, huge, units, paths that
# climb out, a folder, unicode, very long. (argv cannot hold a NUL byte; the API tests cover it.)
HOSTILE_TEXT = ("", " ", "0", "-1", "1", "7", "64", "1k", "4k", "1m", "1.5", "1e3", "nan", "inf", "-inf", "1e400",
                "1000000000000", "9" * 30, "abc", "../escape", "/", ".", "folder.yaml", "missing.yaml",
                "bomb.yaml", "dup.yaml", "utf16.yaml", "é", "1,2", "1,1,1,1", "0,0,0,0", "a" * 3000, "0x10", "none",
                "-0", "+5", "1_000", "64 KiB", "1e300 GiB", "-5 MiB")


def bomb_text(levels: int = 9) -> str:
    """A list of 9**levels strings in a few hundred bytes."""
    lines = ['  - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "bomb:\n" + "\n".join(lines) + "\n"


def populate(folder: Path) -> Path:
    """Spec files the fuzzed commands may name, good and bad, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    h100 = (PRESETS / "h100-sxm.yaml").read_text()
    (folder / "target.yaml").write_text(h100)
    (folder / "spatial.yaml").write_text((PRESETS / "fusemax-cloud.yaml").read_text())
    (folder / "cascade.yaml").write_text((LIBRARY / "fusemax.yaml").read_text())
    (folder / "model.yaml").write_text((MODELS / "BERT.yaml").read_text())
    (folder / "mapping.yaml").write_text("key_tile: 64\nquery_tile: 32\n")
    (folder / "bomb.yaml").write_text(bomb_text())
    (folder / "dup.yaml").write_text(h100.replace("clock: 1.98 GHz\n", "clock: 1.98 GHz\nclock: 100 MHz\n"))
    (folder / "utf16.yaml").write_bytes(h100.encode("utf-16"))
    (folder / "empty.yaml").write_text("")
    (folder / "list.yaml").write_text("- 1\n- 2\n")
    (folder / "folder.yaml").mkdir(exist_ok=True)
    (folder / "measured.csv").write_text("kind,backend,N,D,causal,ms,tflops,tbps\nprefill,x,4096,128,0,nan,300,0\n"
                                         "prefill,y,4096,128,0,0.5,300,0\n")
    (folder / "bad.csv").write_text("not,a,benchmark\n1,2\n")
    return folder
