"""Every command in README.md and docs/*.md runs as written from a clone, so the docs cannot drift.

The commands are the lines of the Markdown's ```bash / ```console / ```sh blocks (a trailing
backslash continues a line; `#` starts a comment). Each document runs in its own scratch folder
that sees the clone's files (benchmarks/, targets/, ...) and nothing else, its blocks in order, so a
file one command writes is there for the next. `einsim ...` runs in-process (einsim.cli.main) and
`python -m einsim.X ...` through the module's main, both fast; any other command runs in bash with
a time limit. A command must exit 0.

A block is marked in the Markdown by an HTML comment on the line before it (invisible on GitHub):
- `<!-- doc-commands: dry-run -->`: its `einsim autotune` commands need a GPU; they run with
  --dry-run (the simulator stands in for the GPU, as documented);
- `<!-- doc-commands: not run: REASON -->`: not run (GPU benchmarks, other hosts, servers), and
  the test says so with the reason.
Installation steps (git clone, venv, pip install, bash .ci/run) are not run here: the test runs
inside an installed clone, tests/test_packaging.py builds and installs the package and CI runs
.ci/run itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from einsim.cli import main as einsim_main

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(bash|console|sh|shell)\s*\n(.*?)^```", re.S | re.M)
MARK = re.compile(r"<!--\s*doc-commands:\s*(.*?)\s*-->\s*$")
INSTALL_STEPS = ("git clone", "cd einsim", "python3 -m venv", "python -m venv", ". .venv/bin/activate", "pip install",
                 "bash .ci/run")
SHELL_TIMEOUT_S = 60


@dataclass(frozen=True)
class Command:
    document: str
    line: int  # where the command starts in its document
    text: str  # continuations joined, the comment removed
    mark: str  # the block's mark: "", "dry-run" or "not run: REASON"


def commands_of(path: Path) -> list[Command]:
    """The commands of a Markdown file's shell blocks, in order, with their block's mark."""
    text = path.read_text(encoding="utf-8")
    found = []
    for block in FENCE.finditer(text):
        before = text[:block.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        first = text[:block.start(2)].count("\n") + 1
        pending, start = "", first
        for offset, raw in enumerate(block.group(2).splitlines()):
            if not pending:
                start = first + offset
            line = raw.rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command = _without_comment(pending + line).strip()
            pending = ""
            if command:
                found.append(Command(path.name, start, command, mark.group(1) if mark else ""))
    return found


def _without_comment(line: str) -> str:
    """The line up to an unquoted `#` that starts a word (shell comments)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _workspace(tmp_path: Path) -> Path:
    """A scratch folder that sees the clone's files: each top-level entry linked, docs/ an empty
    folder of its own (the gallery writes docs/figures)."""
    for entry in ROOT.iterdir():
        if entry.name not in {"docs", ".git"} and not entry.name.startswith("__"):
            (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / "docs").mkdir()
    return tmp_path


def _run(command: Command) -> tuple[int, str]:
    """Exit status and output of one command, run in the current folder."""
    words = shlex.split(command.text)
    if words[0] == "einsim":
        argv = words[1:]
        if command.mark.startswith("dry-run") and argv[:1] == ["autotune"] and "--dry-run" not in argv:
            argv.append("--dry-run")
        return _in_process(lambda: einsim_main(argv))
    if words[:2] in (["python", "-m"], ["python3", "-m"]) and words[2].startswith("einsim."):
        module = __import__(words[2], fromlist=["main"])
        return _in_process(lambda: module.main(words[3:]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-c", command.text], capture_output=True, text=True, timeout=SHELL_TIMEOUT_S,
                          env=env)
    return done.returncode, done.stdout + done.stderr


def _in_process(call) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = call()
        except SystemExit as exit_:  # argparse: a bad option in the docs
            status = exit_.code if isinstance(exit_.code, int) else 1
    return int(status or 0), out.getvalue()


DOCUMENTED = [path for path in DOCUMENTS if commands_of(path)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", DOCUMENTED, ids=[p.name for p in DOCUMENTED])
def test_every_documented_command_runs_as_written(path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(_workspace(tmp_path))
    not_run = []
    for command in commands_of(path):
        where = f"{command.document}:{command.line}: {command.text}"
        if command.mark.startswith("not run"):
            not_run.append(f"{where} ({command.mark})")
            continue
        if command.text.startswith(INSTALL_STEPS):
            not_run.append(f"{where} (installation)")
            continue
        status, output = _run(command)
        assert status == 0, f"{where}\nexit {status}:\n{output[-3000:]}"
    with capsys.disabled():  # say what was not run, and why, in the test's output
        for line in not_run:
            print(f"\nnot run: {line}")


def test_the_extraction_joins_continuations_and_drops_comments(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- doc-commands: dry-run -->\n```bash\n"
                    "einsim passes fusemax   # 1 pass\n"
                    "einsim simulate --target 'a # b' \\\n    --json\n"
                    "# only a comment\n```\n\n```python\nnot = 'a command'\n```\n", encoding="utf-8")
    assert commands_of(page) == [Command("page.md", 4, "einsim passes fusemax", "dry-run"),
                                 Command("page.md", 5, "einsim simulate --target 'a # b'      --json", "dry-run")]


def test_a_failing_command_fails_the_test(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(Command("x.md", 1, "einsim simulate --target no-such-target", ""))[0] == 2
    assert _run(Command("x.md", 1, "einsim simulate --no-such-option", ""))[0] == 2
    assert _run(Command("x.md", 1, "false", ""))[0] == 1
