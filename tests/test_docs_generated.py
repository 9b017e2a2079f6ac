"""The generated tables of docs/validation.md are what the one model gives today: each generator
rewrites a copy of the file and the copy must equal the committed one (issue 10: "the
paper-validation and GPU-validation numbers in docs are regenerated from the one model"). A model
change that moves a number fails here until its author runs the command in the message."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "validation.md"


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [
    "python -m einsim.simulator.paper_validation --update docs/validation.md",
    "PYTHONPATH=. python benchmarks/validate_gpu_model.py --update docs/validation.md",
])
def test_generated_tables_are_current(command, tmp_path):
    copy = tmp_path / "validation.md"
    shutil.copy(DOC, copy)
    if "paper_validation" in command:
        from einsim.simulator.paper_validation import main
    else:
        main = _benchmark("validate_gpu_model").main
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["--update", str(copy)]) == 0
    assert copy.read_text() == DOC.read_text(), f"docs/validation.md is stale: run `{command}` and commit it"
