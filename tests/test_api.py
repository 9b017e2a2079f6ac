"""The notebook API: `from einsim import simulate, load_cascade, load_target, Problem`, an
Estimate that prints as the CLI's report and converts to dicts and rows, strict simulation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import einsim
from einsim import Estimate, Problem, load_cascade, load_target, simulate
from einsim.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
SMALL = Problem(batch=1, q_heads=8, kv_heads=2, q_len=1024, kv_len=1024, head_dim=64, causal=True)


def test_importing_errors_loads_nothing_else_of_einsim():
    code = ("import sys, einsim.errors; "
            "print(sorted(m for m in sys.modules if m.startswith('einsim')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['einsim', 'einsim.errors']"


def test_the_public_names_resolve_lazily_and_are_listed():
    assert {"simulate", "load_cascade", "load_target", "load_model", "Problem", "Estimate"} <= set(dir(einsim))
    assert set(einsim.__all__) <= set(dir(einsim))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        einsim.nope  # noqa: B018


def test_an_estimate_prints_as_the_report_and_converts_to_rows():
    estimate = simulate(load_cascade("attention-3pass"), SMALL, load_target("h100-sxm"))
    assert isinstance(estimate, Estimate)
    text = str(estimate)
    assert text.startswith("attention-3pass on h100-sxm") and "passes over K/V" in text
    assert "live state between passes grows with the sequence" in text and "einsum" in text
    data = estimate.to_dict()
    assert json.loads(json.dumps(data))["problem"]["kv_heads"] == 2
    assert data["attention"] is True and data["rank_sizes"]["M"] == 1024
    records = estimate.records()
    assert len(records) == len(estimate.per_einsum) > 0
    assert all(isinstance(v, (str, int, float, bool)) for row in records for v in row.values())
    assert {"cascade", "einsum", "pass", "unit", "latency_s", "traffic_bytes"} <= set(records[0])
    row = estimate.row(seq_len=1024)
    assert (row["seq_len"], row["heads"], row["kv_heads"], row["latency_s"]) == (1024, 8, 2, estimate.latency_s)
    printed = []
    estimate._repr_pretty_(type("Printer", (), {"text": lambda self, s: printed.append(s)})(), False)
    assert printed == [text]


def test_strict_raises_where_the_design_cannot_run(tmp_path):
    too_big = {"block_m": 1024, "block_n": 1024}
    loose = simulate("fusemax", SMALL, "h100-sxm", too_big)
    assert not loose.fits
    with pytest.raises(ConfigError, match="the kernel cannot launch"):
        simulate("fusemax", SMALL, "h100-sxm", too_big, strict=True)
    mapping = tmp_path / "huge.yaml"
    mapping.write_text("key_tile: 100000000\nquery_tile: 100000\n")
    with pytest.raises(ConfigError, match=r"huge.yaml: fusemax on fusemax-cloud: even one query row"):
        simulate("fusemax", SMALL, "fusemax-cloud", str(mapping), strict=True)
    assert simulate("fusemax", SMALL, "fusemax-cloud", strict=True).fits
