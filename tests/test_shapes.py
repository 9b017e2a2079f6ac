"""The one shape grammar (einsim.shapes) and its command-line face (einsim.cli.problem_args):
every subcommand that takes a problem reads it the same way."""

from __future__ import annotations

import argparse

import pytest

from einsim.cli import main
from einsim.cli.problem_args import add_problem_arguments, problem_from_args
from einsim.errors import ShapeError
from einsim.shapes import parse_lengths, parse_shape, parse_size, parse_window


def test_sizes_take_binary_suffixes():
    assert [parse_size(t) for t in ("4096", "4k", "4K", "1M", "2m", 7)] == [4096, 4096, 4096, 2**20, 2**21, 7]
    assert parse_size("0", allow_zero=True) == 0
    for bad in ("0", "-3", "k", "1.5k", "", "4kb"):
        with pytest.raises(ShapeError, match="--seq-len: expected a positive integer"):
            parse_size(bad, "--seq-len")
    assert parse_lengths("1k, 4k,16k") == [1024, 4096, 16384]
    assert parse_lengths(["1k,2k", "4096"], "--lengths") == parse_lengths("1k 2k 4k") == [1024, 2048, 4096]  # nargs
    with pytest.raises(ShapeError, match="--seq-lens"):
        parse_lengths(",")


def test_shape_grammar():
    p = parse_shape("16,32,4k,128", kv_heads=8, causal=True, window=(256, 0))
    assert (p.batch, p.q_heads, p.kv_len, p.q_len, p.head_dim, p.kv_heads, p.causal, p.window) == (
        16, 32, 4096, 4096, 128, 8, True, (256, 0))
    assert p.name == "shape 16,32,4096,128"
    assert parse_shape("4x16x65536x128", q_len=1).q_len == 1
    assert parse_shape("1,32,8k,128", decode=True).q_len == 1
    assert (parse_shape("1,2,67,130,80").q_len, parse_shape("1,2,67,130,80").kv_len) == (67, 130)
    assert parse_shape("1,2,64,64", dtype="fp8").dtype_bytes == 1
    for bad in ("16,32,4096", "a,b,c,d", "16,32,0,128", "16,-1,4,4", "1,2,3,4,5,6"):
        with pytest.raises(ShapeError, match="--shape"):
            parse_shape(bad)
    with pytest.raises(ShapeError, match="multiple of kv_heads"):
        parse_shape("1,32,128,64", kv_heads=5)
    with pytest.raises(ShapeError, match="give one"):
        parse_shape("1,2,67,130,80", q_len=3)


def test_window_grammar():
    assert parse_window("4096") == (4096, 0) and parse_window("128,64") == (128, 64)
    assert parse_window("2k, 0") == (2048, 0) and parse_window(None) is None and parse_window("none") is None
    for bad in ("1,2,3", "-1", "a"):
        with pytest.raises(ShapeError, match="--window"):
            parse_window(bad)


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_problem_arguments(parser)
    return parser.parse_args(argv)


def test_problem_arguments_round_trip():
    p = problem_from_args(_parse(["--model", "mistral-7b", "--seq-len", "16k", "--mode", "decode"]))
    assert (p.q_len, p.kv_len, p.window) == (1, 16384, (4096, 0))
    p = problem_from_args(_parse(["--shape", "2,32,1024,64", "--kv-heads", "8", "--causal", "--dtype", "fp16"]))
    assert (p.batch, p.kv_heads, p.causal, p.dtype) == (2, 8, True, "fp16")
    p = problem_from_args(_parse(["--model", "llama3-8b", "--seq-len", "4k", "--q-len", "16", "--window", "128"]))
    assert (p.q_len, p.kv_len, p.window, dict(p.symbols)["hidden"]) == (16, 4096, (128, 0), 4096)
    assert problem_from_args(_parse([]), default_shape="1,2,3,16").kv_len == 3
    assert problem_from_args(_parse([]), default_model="BERT", default_seq_len=1024).name == "BERT/prefill/1024"


@pytest.mark.parametrize("argv, message", [
    (["--shape", "2,32,1024,64", "--model", "BERT"], "either --model"),
    (["--shape", "2,32,1024,64", "--batch", "4"], "--batch is for --model"),
    (["--shape", "2,32,1024,64", "--seq-len", "4k"], "--seq-len is for --model"),
    ([], "a problem is needed"),
])
def test_conflicting_problem_arguments_are_named(argv, message):
    with pytest.raises(ShapeError, match=message):
        problem_from_args(_parse(argv))


def test_kernels_show_reads_shapes_like_simulate(capsys):
    argv = ["--shape", "1,2,4k,64", "--window", "128", "--kv-heads", "1"]
    assert main(["kernels", "show", "attention-fwd", *argv]) == 0
    shown = capsys.readouterr().out
    assert "B=1 H=2/1 Nq=4096 Nk=4096 D=64 full window=(128, 0) bf16" in shown
    assert main(["kernels", "show", "decode", "--shape", "1,32,8k,128"]) == 0
    assert "Nq=1 Nk=8192" in capsys.readouterr().out
    assert main(["kernels", "show", "attention-fwd", "--shape", "1,2,64,64", "--dtype", "fp32"]) == 2
    assert "--dtype fp32: einsim's kernels take bf16 or fp16" in capsys.readouterr().err


def _subcommands(parser, path=()):
    """(command path, parser) of every sub-command, depth first."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


def test_every_command_that_takes_a_shape_takes_the_whole_grammar():
    """One grammar for every command (issue 10): whoever accepts --shape accepts all of
    add_problem_arguments' options, so no command grows a private parser again."""
    from einsim.cli import build_parser

    options = {"--shape", "--model", "--seq-len", "--kv-heads", "--q-len", "--causal", "--window", "--dtype"}
    taking = {}
    for path, sub in _subcommands(build_parser()):
        given = {o for action in sub._actions for o in action.option_strings}
        if "--shape" in given:
            taking[" ".join(path)] = options - given
    assert {"simulate", "roofline", "autotune", "kernels show"} <= set(taking), sorted(taking)
    assert not {cmd: missing for cmd, missing in taking.items() if missing}
