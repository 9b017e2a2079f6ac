"""The simulator's front door and `einsim simulate`: names and paths resolve, GPU and spatial
targets dispatch, the default command runs, JSON has the documented shape, bad input exits 2."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from einsim.cli import main
from einsim.errors import ShapeError, SpecError
from einsim.problem import Problem
from einsim.simulator.mapping import parse_mapping
from einsim.simulator.models import load_model
from einsim.simulator.simulate import simulate
from einsim.targets import load_target

JSON_KEYS = {"passes", "buffer_bytes", "fits", "traffic_bytes", "latency_s", "energy_j", "utilization", "per_einsum"}


def test_names_paths_and_objects_give_the_same_estimate(tmp_path):
    from einsim.einsum_cascades import load_cascade
    from einsim.targets.loader import PRESET_DIR

    problem = load_model("BERT").problem(4096)
    by_name = simulate("fusemax", problem, "fusemax-cloud")
    by_path = simulate(load_cascade("fusemax").source, problem, str(PRESET_DIR / "fusemax-cloud.yaml"))
    by_object = simulate(load_cascade("fusemax"), problem, load_target("fusemax-cloud"))
    assert by_name.latency_s == by_path.latency_s == by_object.latency_s


@pytest.mark.parametrize("target", ["h100-sxm", "fusemax-cloud"])
def test_gpu_and_spatial_targets_both_return_an_estimate(target):
    estimate = simulate("fusemax", load_model("llama3-8b").problem(4096), target)
    assert estimate.target == target and estimate.latency_s > 0 and estimate.passes == 1
    assert JSON_KEYS <= set(estimate.to_dict())


def test_the_default_command_runs_and_prints_a_readable_table(capsys):
    assert main(["simulate"]) == 0
    out = capsys.readouterr().out
    assert "fusemax on h100-sxm" in out and "llama3-8b" in out
    for word in ("latency", "off-chip traffic", "on-chip buffer", "energy", "utilisation", "einsum"):
        assert word in out


def test_json_output_has_the_documented_keys(capsys):
    assert main(["simulate", "--target", "flat-cloud", "--cascade", "attention-3pass", "--model", "BERT", "--seq-len", "1k", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= set(data)
    assert set(data["utilization"]) >= {"pe_2d", "pe_1d"}
    assert [row["einsum"] for row in data["per_einsum"]] == ["QK", "GM", "SN", "SD", "A", "AV"]


def test_shape_and_mapping_file_arguments(tmp_path, capsys):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(yaml.safe_dump({"key_tile": 128, "schedule": "sequential"}))
    assert main(["simulate", "--target", "fusemax-edge", "--shape", "2,8,2048,64", "--mapping", str(mapping), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mapping"]["key_tile"] == 128 and data["mapping"]["schedule"] == "sequential"
    assert data["problem"]["batch"] == 2


def test_buffer_sweep_prints_the_curve_and_refuses_gpus(capsys, tmp_path):
    out_csv = tmp_path / "curve.csv"
    assert main(["simulate", "--target", "fusemax-cloud", "--model", "BERT", "--seq-len", "4k", "--buffer-sweep", "--csv", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "x compulsory" in out and out_csv.read_text().startswith("buffer_bytes,")
    assert main(["simulate", "--buffer-sweep"]) == 2
    assert "spatial" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--target", "nope"], "unknown target"),
    (["simulate", "--cascade", "nope", "--target", "fusemax-cloud"], "no cascade named"),
    (["simulate", "--model", "nope"], "unknown model"),
])
def test_bad_input_exits_2_with_a_message(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("document, message", [
    ({"key_tile": -4}, "m.yaml: key_tile: expected a positive integer, got -4"),
    ({"schedule": "fast"}, "m.yaml: schedule: expected one of pipelined, sequential, got 'fast'"),
    ({"binding": {"QK": "gpu"}}, "m.yaml: binding.QK: expected pe_2d or pe_1d, got 'gpu'"),
    ({"tiles": 3}, "m.yaml: tiles: expected one of the fields"),
    ({"groups": [[]]}, "m.yaml: groups[0]: expected a non-empty list of Einsum names"),
])
def test_mapping_files_are_validated_like_targets(document, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_mapping(document, "m.yaml")


@pytest.mark.parametrize("option", ["--target", "--mapping", "--model"])
def test_malformed_yaml_is_one_line_naming_file_line_and_column(option, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: x\n  bad: [\n")
    argv = ["simulate", option, "bad.yaml"] + (["--seq-len", "1k"] if option == "--model" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:2:6: not valid YAML: mapping values are not allowed here" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_gpu_mapping_field_names_the_file(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text("softmax_overlap: abc\n")  # a string, not a fraction: no TypeError from the range check
    assert main(["simulate", "--mapping", str(path)]) == 2
    assert "m.yaml: GPU mapping softmax_overlap must be in [0, 1], got 'abc'" in capsys.readouterr().err


@pytest.mark.parametrize("target, document, message", [
    ("h100-sxm", "block_m: 1024\nblock_n: 1024\n", "the kernel cannot launch, it needs"),
    ("fusemax-cloud", "key_tile: 100000000\nquery_tile: 100000\n", "even one query row's resident state does not fit in 16 MiB"),
])
def test_a_mapping_that_does_not_fit_exits_2_naming_the_file_and_the_fix(target, document, message, tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text(document)
    assert main(["simulate", "--target", target, "--model", "BERT", "--seq-len", "4k", "--mapping", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: fusemax on {target}: {message}" in err and "choose smaller" in err


def test_a_cascade_rank_fixed_to_another_size_than_the_workload_is_a_shape_error(tmp_path, capsys):
    library = (Path(__file__).parents[1] / "einsum_cascades" / "library" / "attention-3pass.yaml").read_text()
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(library.replace("E: head_dim", "E: 64"))
    assert main(["simulate", "--cascade", str(fixed), "--target", "flat-cloud", "--shape", "1,8,1024,128"]) == 2
    assert "fixed.yaml: ranks.E is declared 64, but the workload (shape 1,8,1024,128) has head_dim 128" in capsys.readouterr().err
    assert main(["simulate", "--cascade", str(fixed), "--target", "flat-cloud", "--shape", "1,8,1024,64"]) == 0


def test_the_passes_note_follows_the_pass_analysis_not_the_pass_count(capsys):
    # decode-splitkv: 2 passes counting the merge, but its per-chunk partials do not grow with M
    assert main(["simulate", "--cascade", "decode-splitkv", "--model", "llama3-8b", "--seq-len", "32k", "--mode", "decode"]) == 0
    assert "live state between passes does not grow with the sequence" in capsys.readouterr().out
    assert main(["simulate", "--cascade", "attention-3pass", "--target", "flat-cloud", "--model", "BERT", "--seq-len", "1k"]) == 0
    assert "live state between passes grows with the sequence" in capsys.readouterr().out


def test_csv_without_buffer_sweep_is_an_error_not_silently_ignored(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert main(["simulate", "--csv", str(out)]) == 2
    assert "writes the --buffer-sweep curve; add --buffer-sweep" in capsys.readouterr().err
    assert not out.exists()


def test_a_non_attention_cascade_gets_no_q_k_v_o_or_k_v_pass_notes(capsys):
    # "0.0156x the compulsory Q, K, V, O" meant nothing for a GEMM
    assert main(["simulate", "--cascade", "gemm", "--model", "BERT", "--seq-len", "1k"]) == 0
    out = capsys.readouterr().out
    assert "compulsory" not in out and "K/V" not in out and "mapped unfused" in out


def test_a_non_attention_cascade_header_shows_the_rank_sizes_simulated(capsys):
    # a GEMM binds only M from the workload; printing "batch 64, 12 heads, head dim 64" misled
    assert main(["simulate", "--cascade", "gemm", "--model", "BERT", "--seq-len", "2k"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("gemm on h100-sxm — ranks K=1024, M=2048, N=1024") and "heads" not in first


@pytest.mark.parametrize("target", ["fusemax-cloud", "h100-sxm"])
def test_a_window_cascade_without_a_window_is_an_error_naming_the_fix(target):
    problem = Problem(batch=1, q_heads=2, q_len=1024, kv_len=1024, head_dim=64)
    with pytest.raises(ShapeError, match=r"has no window; give it one: --window LEFT,RIGHT"):
        simulate("attention-window", problem, target)


def test_the_spatial_model_binds_the_problems_window_into_the_cascades_filter():
    problem = Problem(batch=1, q_heads=2, q_len=2048, kv_len=2048, head_dim=64, window=(127, 0))
    narrow = simulate("attention-window", problem, "fusemax-cloud")
    wide = simulate("attention-window", replace(problem, window=(1023, 0)), "fusemax-cloud")
    # the cascade's own window filter follows the problem (not the YAML's example 256)
    assert narrow.compute_ops["exp"] < wide.compute_ops["exp"]
