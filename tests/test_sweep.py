"""Sweeps: the grid to CSV rows with every design's figures, errors as rows, and the
traffic-versus-buffer curve whose knee shows the live state between passes."""

from __future__ import annotations

import csv

import pytest

from einsim.cli import main
from einsim.simulator.models import load_model
from einsim.simulator.sweep import buffer_sweep, grid


def test_grid_has_one_row_per_combination_with_the_estimate_columns():
    rows = grid(["fusemax-cloud", "flat-cloud"], ["fusemax", "attention-3pass"], ["BERT", "T5"], [1024, 4096], progress=False)
    assert len(rows) == 16
    assert {"target", "cascade", "model", "seq_len", "latency_s", "traffic_bytes", "energy_j", "passes", "util_pe_2d"} <= set(rows[0])


def test_a_combination_the_model_rejects_is_a_row_with_its_error():
    rows = grid(["flat-cloud"], ["fusemax"], ["BERT"], [1024], mapping={"binding": {"AV": "pe_2d"}}, progress=False)
    assert "divider" in rows[0]["error"]


def test_one_pass_traffic_falls_to_compulsory_and_stays_there():
    rows = buffer_sweep("fusemax", load_model("BERT").problem(16384), "fusemax-cloud")
    feasible = [r for r in rows if r["spill"] != "does not fit"]
    assert feasible[-1]["traffic_over_compulsory"] == pytest.approx(1.0)
    assert not any(r["spill_fraction"] for r in feasible)  # nothing ever spills: no live state
    first = next(r["buffer_bytes"] for r in feasible if r["traffic_over_compulsory"] == pytest.approx(1.0))
    assert first <= 16 * 2**20


def test_the_three_pass_knee_moves_with_the_sequence_length():
    def knee(seq_len):
        # the FuseMax paper's reading of FLAT: the 3-pass cascade keeps whole rows of QK on chip
        rows = buffer_sweep("attention-3pass", load_model("BERT").problem(seq_len), "flat-cloud", {"staging": "resident"})
        return min(r["buffer_bytes"] for r in rows if r["fits"])

    assert knee(16384) >= 3 * knee(4096)


def test_the_sweep_command_writes_a_csv(tmp_path, capsys):
    out = tmp_path / "grid.csv"
    assert main(["sweep", "--targets", "fusemax-cloud", "--cascades", "fusemax", "--models", "BERT", "--seq-lens", "1k,4k",
                 "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["seq_len"]) for r in rows] == [1024, 4096]
    assert main(["sweep", "--seq-lens", "4q"]) == 2


@pytest.mark.parametrize("option, value, named", [
    ("--targets", "fusemax-cloud,nope", "unknown target 'nope'"),
    ("--cascades", "fusemax,nope", "no cascade named 'nope'"),
    ("--models", "BERT,nope", "unknown model 'nope'"),
    ("--mapping", "no-such-mapping.yaml", "no-such-mapping.yaml"),
])
def test_a_misspelt_sweep_name_fails_before_the_grid_with_exit_2(option, value, named, capsys):
    assert main(["sweep", option, value, "--seq-lens", "1k", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no CSV of error rows
    assert named in captured.err and "Traceback" not in captured.err


def test_a_buffer_sweep_of_a_gpu_names_the_fix_without_a_cli_flag():
    # the API is shared by `einsim simulate --buffer-sweep` and `einsim plot traffic-vs-buffer`
    from einsim.errors import ConfigError

    with pytest.raises(ConfigError, match="h100-sxm: a traffic-versus-buffer sweep varies a spatial design's global buffer") as caught:
        buffer_sweep("fusemax", load_model("BERT").problem(1024), "h100-sxm")
    assert "--buffer-sweep" not in str(caught.value) and "give a spatial target" in str(caught.value)
