"""Fuzzing the command line: every subcommand with arguments drawn from valid and hostile values
(tests/fuzz_support.py says what each run must satisfy: exit 0 or a named error with exit 2, no
traceback, no hang, no write outside its folder, strict JSON). Runs in-process for speed; a few
cases run as real subprocesses to pin the exit status the shell sees."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from fuzz_support import FUZZ, HOSTILE_TEXT, REPO, populate, run_cli  # noqa: E402

# `einsim kernels compile` and `autotune --cascade` write generated kernels here, not in ~/.cache
os.environ.setdefault("EINSIM_COMPILE_DIR", tempfile.mkdtemp(prefix="einsim-fuzz-compiled-"))

TARGETS = ("h100-sxm", "h200", "a100-80gb", "fusemax-cloud", "flat-edge", "unfused-cloud", "target.yaml",
           "spatial.yaml")
CASCADES = ("fusemax", "attention-3pass", "attention-causal", "decode-splitkv", "flat", "gemm", "cascade.yaml")
MODELS = ("BERT", "TrXL", "llama3-8b", "model.yaml")
KERNELS = ("attention-fwd", "attention-bwd", "decode", "attention-2pass-fwd", "linear-fwd", "linear-decode")
SOFTMAX = ("fusemax", "attention-causal", "softcap", "sinks-window", "packed-documents", "linear-attention", "gemm",
           "cascade.yaml")  # for the compiler (the last three it must refuse by name)
SHAPES = ("1,8,1024,64", "2,4,128,128", "1,1,67,80", "1,32,4k,128", "1,8,1,130,96", "8,32,8192,128")
FILES = ("target.yaml", "cascade.yaml", "model.yaml", "mapping.yaml", "bomb.yaml", "dup.yaml", "utf16.yaml",
         "empty.yaml", "list.yaml", "folder.yaml", "missing.yaml", "measured.csv", "bad.csv")


def values(*valid: str) -> tuple[str, ...]:
    """The valid values of an option (argv_for makes at most one option of a run hostile)."""
    return valid


# The two ways to state a problem, each with the options that go with it (mixing them is a
# usage error, which the hostile runs cover).
SHAPE_FORM = {"--shape": SHAPES, "--kv-heads": ("1", "2", "8"), "--q-len": ("1", "16", "128"), "--causal": None,
              "--window": ("128", "64,64", "0"), "--dtype": ("bf16", "fp16", "fp8", "fp32")}
MODEL_FORM = {"--model": MODELS, "--seq-len": ("1k", "4k", "512", "67"), "--mode": ("prefill", "decode"),
              "--batch": ("1", "2", "8"), "--causal": None, "--window": ("128", "0"), "--dtype": ("bf16", "fp16")}
PROBLEM = {**SHAPE_FORM, **MODEL_FORM}  # for the hostile value's pick of option
COMMANDS: dict[str, tuple[list[str], dict]] = {
    "simulate": (["simulate"], {"--cascade": values(*CASCADES), "--target": values(*TARGETS),
                                "--mapping": values("mapping.yaml"), "--json": None, "--buffer-sweep": None,
                                "--csv": values("out.csv", "sub/out.csv")}),
    "layer": (["simulate", "--layer"], {"--model": values(*MODELS), "--seq-len": values("1k", "67"),
                                        "--mode": values("prefill", "decode"), "--batch": values("1", "8"),
                                        "--target": values("h100-sxm", "h200", "fusemax-cloud"),
                                        "--cascade": values("fusemax", "linear-attention"), "--json": None,
                                        "--dtype": values("bf16")}),
    "sweep": (["sweep", "--no-progress"], {"--targets": values("fusemax-cloud", "h100-sxm,flat-cloud"),
                                           "--cascades": values("fusemax", "fusemax,attention-3pass"),
                                           "--models": values("BERT", "BERT,T5"), "--seq-lens": values("1k", "1k,4k"),
                                           "--mode": values("prefill", "decode"), "--mapping": values("mapping.yaml"),
                                           "--out": values("sweep.csv", "sub/sweep.csv")}),
    "roofline": (["roofline"], {"--target": values(*TARGETS), "--cascade": values(*CASCADES),
                                "--peaks": values("measured", "datasheet"), "--per-einsum": None,
                                "--measured": values("measured.csv", "bad.csv"), "--match": values("shape", "all"),
                                "--csv": values("roof.csv", "-"), "--json": None,
                                "--tuning-db": values("missing.db", "sqlite:///missing.db")}),
    "traffic": (["plot", "traffic-vs-buffer"], {"--target": values("fusemax-cloud", "flat-cloud"),
                                                "--cascade": values(*CASCADES), "--min-buffer": values("16 KiB", "1 MiB"),
                                                "--max-buffer": values("64 MiB", "4 GiB"),
                                                "--per-octave": values("1", "2", "3"), "--json": None,
                                                "--csv": values("t.csv")}),
    "speedup": (["plot", "speedup"], {"--design": values("F=fusemax-cloud:fusemax", "U=unfused-cloud:attention-3pass",
                                                         "flat-cloud:attention-3pass"),
                                      "--baseline": values("F", "U"), "--model": values("BERT", "T5"),
                                      "--seq-lens": values("1k", "1k,4k"), "--mode": values("prefill", "decode"),
                                      "--batch": values("1", "4"), "--json": None}),
    "passes-plot": (["plot", "passes"], {"--rank": values("M", "P"), "--json": None, "--no-text": None}),
    "cascades": (["cascades", "show"], {"--rank": values("M", "P"), "--json": None}),
    "passes": (["passes"], {"--rank": values("M", "P", "E"), "--json": None}),
    "targets": (["targets", "show"], {"--json": None}),
    "kernels": (["kernels", "show"], {"--json": None}),
    "autotune": (["autotune", "--dry-run", "--no-progress", "--no-export", "--storage", ":memory:"],
                 {"--kernel": values(*KERNELS), "--target": values("h100-sxm", "h200", "a100-80gb"),
                  "--trials": values("2", "3"), "--storage": values(":memory:", "tune.db", "sqlite:///tune.db"),
                  "--study": values("mine"), "--seed": values("0", "1"), "--seeds": values("0", "1", "2"),
                  "--timeout": values("20"), "--json": None}),
    "compile": (["kernels", "compile"], {"--json": None, "--show-source": None}),
    "autotune-cascade": (["autotune", "--dry-run", "--no-progress", "--no-export", "--storage", ":memory:"],
                         {"--cascade": values(*SOFTMAX), "--backward": None, "--trials": values("2"),
                          "--target": values("h100-sxm", "h200"), "--seed": values("0"), "--json": None}),
    "all-shapes": (["autotune", "--all-shapes", "--dry-run", "--no-progress", "--no-export", "--time-budget", "3",
                    "--prefill-lengths", "1k", "--decode-batches", "1"],
                   {"--model": values("llama3-8b", "model.yaml"), "--kernel": values("decode", "attention-fwd"),
                    "--decode-caches": values("4k"), "--storage": values(":memory:", "fleet.db"),
                    "--max-kv-gib": values("24"), "--trials": values("2"), "--workers": values("1"),
                    "--json": None}),  # --gpus would start real worker processes: test_cli_errors checks it
}
# Options always given (each drawn from its values like the rest), so runs get past argparse.
REQUIRED = {"roofline": ("--target",), "traffic": ("--target",), "autotune": ("--kernel",),
            "autotune-cascade": ("--cascade",), "all-shapes": ("--model",)}
TAKES_PROBLEM = {"simulate", "roofline", "traffic", "kernels", "autotune", "autotune-cascade"}
POSITIONAL = {"passes-plot": CASCADES, "cascades": CASCADES, "passes": CASCADES, "targets": TARGETS,
              "kernels": KERNELS, "compile": SOFTMAX}


@st.composite
def argv_for(draw: st.DrawFn, command: str) -> list[str]:
    prefix, options = COMMANDS[command]
    argv = list(prefix)
    required = REQUIRED.get(command, ())
    chosen = [("", POSITIONAL[command])] if command in POSITIONAL else []  # "": the positional argument
    chosen += [(option, options[option]) for option in required]
    chosen += [(option, options[option]) for option in draw(st.lists(
        st.sampled_from(sorted(set(options) - set(required))), max_size=3, unique=True))]
    if command in TAKES_PROBLEM:
        form = draw(st.sampled_from((SHAPE_FORM, MODEL_FORM, SHAPE_FORM, {})))
        leading = ["--shape"] if form is SHAPE_FORM else ["--model", "--seq-len"] if form is MODEL_FORM else []
        rest = sorted(set(form) - set(leading))
        extras = draw(st.lists(st.sampled_from(rest), max_size=2, unique=True)) if rest else []
        chosen += [(option, form[option]) for option in leading + extras]
    # Half the runs are valid throughout (they do real work); the others have one hostile value.
    with_value = [option for option, pool in chosen if pool is not None]
    hostile = draw(st.sampled_from([None, *with_value])) if with_value else None
    for option, pool in chosen:
        if option:
            argv.append(option)
        if pool is not None:
            argv.append(draw(st.sampled_from(HOSTILE_TEXT + FILES if option == hostile else pool)))
    return argv


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The working folder of every run (its parent is watched for writes outside it)."""
    return populate(tmp_path_factory.mktemp("fuzz-cli") / "work")


def _fuzz(command: str, max_examples: int):
    @hypothesis.settings(FUZZ, max_examples=max_examples)
    @given(argv=argv_for(command))
    def run(folder: Path, argv: list[str]) -> None:
        run_cli(argv, folder)

    return run


test_fuzz_simulate = _fuzz("simulate", 40)
test_fuzz_sweep = _fuzz("sweep", 10)
test_fuzz_roofline = _fuzz("roofline", 30)
test_fuzz_plot_traffic = _fuzz("traffic", 15)
test_fuzz_plot_speedup = _fuzz("speedup", 12)
test_fuzz_plot_passes = _fuzz("passes-plot", 12)
test_fuzz_cascades_show = _fuzz("cascades", 15)
test_fuzz_passes = _fuzz("passes", 15)
test_fuzz_targets_show = _fuzz("targets", 15)
test_fuzz_kernels_show = _fuzz("kernels", 25)
test_fuzz_autotune = _fuzz("autotune", 12)
test_fuzz_simulate_layer = _fuzz("layer", 12)
test_fuzz_kernels_compile = _fuzz("compile", 10)
test_fuzz_autotune_cascade = _fuzz("autotune-cascade", 10)
test_fuzz_autotune_all_shapes = _fuzz("all-shapes", 6)


@hypothesis.settings(FUZZ, max_examples=40)
@given(argv=st.lists(st.sampled_from(HOSTILE_TEXT + ("--json", "--help", "-o", "list", "show", "graph", "simulate",
                                                      "plot", "cascades", "kernels", "--version")), max_size=5))
def test_fuzz_any_words(folder: Path, argv: list[str]) -> None:
    """Arbitrary words as a command line: usage errors are exit 2, never a traceback."""
    run_cli(argv, folder)


@pytest.mark.parametrize("argv, status", [
    (["simulate", "--target", "bomb.yaml"], 2),
    (["targets", "show", "utf16.yaml"], 2),
    (["simulate", "--seq-len", "1000000000000"], 2),
    (["simulate", "--json", "--model", "BERT", "--seq-len", "1k"], 0),
    (["no-such-command"], 2),
])
def test_subprocess_exit_status(folder: Path, argv: list[str], status: int) -> None:
    """What the shell sees: the status, one error line on stderr, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "einsim", *argv], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == status, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if status == 2:
        assert done.stderr.strip() and len(done.stderr) < 3000
