"""`einsim cascades list|show|graph` and `einsim passes`: thin shells over the Python API."""

import json

import pytest

from einsim.cli import main


def test_cascades_list_names_every_library_cascade(capsys):
    assert main(["cascades", "list"]) == 0
    out = capsys.readouterr().out
    assert "fusemax" in out and "attention-3pass" in out and "decode-splitkv" in out


def test_cascades_show_prints_einsums_with_pass_numbers(capsys):
    assert main(["cascades", "show", "attention-3pass"]) == 0
    out = capsys.readouterr().out
    assert "passes over M: 3" in out
    assert any(line.split()[:2] == ["3", "A[b,h,m,p]"] for line in out.splitlines())


def test_cascades_graph_writes_a_png(tmp_path, capsys):
    path = tmp_path / "graph.png"
    assert main(["cascades", "graph", "fusemax", "-o", str(path)]) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name, message", [
    ("graph.txt", "expected a file name ending in .png, .svg, .pdf, got '.txt'"),
    ("missing/graph.png", "does not exist; create it or write elsewhere"),
])
def test_cascades_graph_bad_output_path_exits_2_without_a_traceback(name, message, tmp_path, capsys):
    assert main(["cascades", "graph", "fusemax", "-o", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_passes_json(capsys):
    assert main(["passes", "attention-3pass", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cascade"] == "attention-3pass" and data["rank"] == "M" and data["passes"] == 3
    assert data["einsum_pass"]["SN"] == 2
    assert {"tensor": "QK", "elements": "B*H*M*P"}.items() <= data["live_across_passes"][0].items()


def test_passes_over_a_chunk(capsys):
    assert main(["passes", "decode-splitkv", "--rank", "MT", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passes"] == 1


def test_bad_cascade_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nranks: {M: 4}\ninputs: {X: [M]}\neinsums:\n  - Y[m] = X[m] +\noutputs: [Y]\n")
    assert main(["passes", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5:18: expected" in err and "Traceback" not in err


def test_passes_of_a_one_pass_cascade_say_why_nothing_is_live(capsys):
    assert main(["passes", "fusemax"]) == 0
    assert "live across passes: nothing (one pass over M: only per-tile state)" in capsys.readouterr().out


def test_cascades_reassociate_prints_the_one_pass_form(tmp_path, capsys):
    assert main(["cascades", "reassociate", "attention-3pass"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# attention-3pass: 3 pass(es) over M -> 1 after the reassociation")
    assert "RM[b,h,m1+1,p] = max(RM[b,h,m1,p], LM[b,h,m1,p])" in out
    path = tmp_path / "derived.yaml"
    assert main(["cascades", "reassociate", "flat", "-o", str(path)]) == 0
    assert main(["passes", str(path)]) == 0
    assert "1 pass" in capsys.readouterr().out.lower()


def test_cascades_reassociate_names_what_is_not_softmax(capsys):
    assert main(["cascades", "reassociate", "linear-attention"]) == 2
    assert "no Einsum takes the max of one tensor over one rank" in capsys.readouterr().err


def test_cascades_tiles_draws_the_tile_classes(tmp_path, capsys):
    assert main(["cascades", "tiles", "attention-causal", "--set", "kv_len=300", "--set", "q_len=300", "--block",
                 "128x128"]) == 0
    out = capsys.readouterr().out
    assert "empty 3, partial 3, full 3 of 9 tiles" in out
    assert out.splitlines()[-3:] == ["  +..", "  #+.", "  ##+"]
    import numpy as np

    ids = np.repeat([[0.0, 1.0]], 128, axis=1)
    np.savez(tmp_path / "ids.npz", DQ=ids, DK=ids)
    assert main(["cascades", "tiles", "packed-documents", "--set", "kv_len=256", "--set", "q_len=256",
                 "--tensors", str(tmp_path / "ids.npz"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["empty"], data["partial"], data["full"]) == (2, 2, 0) and data["batch"] == ["B"]


def test_cascades_tiles_asks_for_the_tensors_a_filter_reads(capsys):
    assert main(["cascades", "tiles", "block-sparse"]) == 2
    assert "its filters read BLOCKS; give their values with --tensors FILE.npz" in capsys.readouterr().err
