"""Bad input to every kind of subcommand is one named error line and exit status 2, checked before
any big work; nothing is written outside the place asked for; --json is always valid JSON.
(Each case was a traceback, a silent wrong answer or a write elsewhere before: issue 9.)"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest

from einsim.cli import main
from einsim.cli.output import print_json

LIBRARY = Path(__file__).resolve().parent.parent / "einsum_cascades" / "library"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fails(argv: list[str], capsys, *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("argv, fragments", [
    (["simulate", "--seq-len", "1000000000000"], ["q_len=1000000000000 is beyond the largest"]),  # 58 GiB before
    (["plot", "traffic-vs-buffer", "--target", "fusemax-cloud", "--model", "BERT", "--seq-len", "1k",
      "--per-octave", "100000"], ["more than 10000"]),  # OOM-killed before
    (["plot", "traffic-vs-buffer", "--target", "fusemax-cloud", "--model", "BERT", "--seq-len", "1k",
      "--max-buffer", "1e300 GiB"], ["--max-buffer expects a positive size"]),  # OverflowError before
    (["sweep", "--out", "missing/x.csv", "--seq-lens", "1k", "--models", "BERT", "--targets", "fusemax-cloud",
      "--cascades", "fusemax"], ["--out 'missing/x.csv': the folder 'missing' does not exist"]),
    (["simulate", "--buffer-sweep", "--target", "fusemax-cloud", "--csv", "missing/x.csv"], ["does not exist"]),
    (["cascades", "graph", "fusemax", "-o", "."], ["is a folder"]),
    (["plot", "speedup", "--design", "A=fusemax-cloud:fusemax", "--design", "A=flat-cloud:attention-3pass",
      "--model", "BERT", "--seq-lens", "1k"], ["'A' is given more than once"]),  # reported another's latency
    (["autotune", "--kernel", "decode", "--shape", "8,32,8192,7", "--dry-run", "--no-progress"],
     ["declares no config that can run", "head dims 7/7: expected 16 to 256"]),
    (["autotune", "--kernel", "decode", "--shape", "8,32,8192,128", "--dry-run", "--seeds", "-5"],
     ["--seeds must be 0 or more"]),  # enqueued 69 seeds before
    (["autotune", "--kernel", "decode", "--shape", "8,32,8192,128", "--dry-run", "--seed", "-1"], ["--seed must"]),
    (["autotune", "--kernel", "decode", "--shape", "8,32,8192,128", "--dry-run", "--timeout", "nan"],
     ["--timeout must be a positive number"]),
    (["kernels", "show", "decod", "--shape", "1,1,64,64"], ["unknown kernel 'decod' (did you mean 'decode"]),
    (["simulate", "--model", "llama3-8x"], ["(did you mean 'llama3-8b'?)"]),
    (["simulate", "--cascade", "fusemx"], ["(did you mean 'fusemax'?)"]),
    (["simulate", "--target", "h10"], ["(did you mean 'h100-sxm'?)"]),
    # --layer takes the model preset as it is: options it would ignore are named, not dropped
    (["simulate", "--layer", "--dtype", "fp8"], ["--layer does not take --dtype"]),  # fp16 numbers before
    (["simulate", "--layer", "--kv-heads", "3", "--window", "100", "--causal"],
     ["--layer does not take --kv-heads, --causal, --window"]),
    (["simulate", "--layer", "--buffer-sweep"], ["--layer does not take --buffer-sweep"]),
])
def test_bad_arguments_are_named_errors(argv: list[str], fragments: list[str], capsys) -> None:
    _fails(argv, capsys, *fragments)


def test_a_cascade_name_never_writes_outside_the_current_folder(in_tmp: Path, capsys) -> None:
    work = in_tmp / "work"
    work.mkdir()
    text = (LIBRARY / "attention-1pass.yaml").read_text()
    for name in ("../outside/x", str(in_tmp / "absolute")):
        (work / "c.yaml").write_text(text.replace("name: attention-1pass", f"name: {name}"))
        (in_tmp / "outside").mkdir(exist_ok=True)
        assert main(["cascades", "graph", str(work / "c.yaml")]) == 0
    written = list(in_tmp.rglob("*.png"))
    assert len(written) == 2 and all(p.parent == in_tmp for p in written)  # the current folder, nowhere else
    assert {p.name for p in written} >= {"outside-x.png"} and not (in_tmp / "absolute.png").exists()
    capsys.readouterr()


def test_autotune_without_torch_says_to_add_dry_run_or_install(monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    _fails(["autotune", "--kernel", "decode", "--shape", "8,32,8192,128", "--no-progress"], capsys,
           "needs torch", "pip install 'einsim[kernels]'", "--dry-run")


def test_json_output_is_valid_with_nan_and_infinity(capsys) -> None:
    print_json({"rows": [{"ms": float("nan")}, {"ms": float("inf"), "ok": 1.5}]})
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"rows": [{"ms": None}, {"ms": None, "ok": 1.5}]}  # strict JSON
    assert "NaN" not in captured.out and "Infinity" not in captured.out
    assert "2 value(s) were NaN or infinite and are written as null: rows[0].ms, rows[1].ms" in captured.err


def test_measured_csv_with_nan_rows_and_bad_cells(in_tmp: Path, capsys) -> None:
    header = "kind,backend,N,D,causal,ms,tflops,tbps\n"
    (in_tmp / "nan.csv").write_text(header + "prefill,x,4096,128,0,nan,300,0\nprefill,y,4096,128,0,1.0,inf,0\n"
                                    "prefill,z,4096,128,0,0.5,300,0\n")
    assert main(["roofline", "--target", "h100-sxm", "--shape", "1,32,4096,128", "--measured", "nan.csv",
                 "--json"]) == 0
    out = capsys.readouterr().out
    json.loads(out)  # valid JSON: the NaN/inf rows are skipped as failed measurements
    assert '"z"' in out and '"x"' not in out
    (in_tmp / "inf.csv").write_text(header + "prefill,x,inf,128,0,1.0,300,0\n")
    _fails(["roofline", "--target", "h100-sxm", "--shape", "1,32,4096,128", "--measured", "inf.csv"], capsys,
           "inf.csv:2:")
    (in_tmp / "latin1.csv").write_bytes((header + "prefill,caf\xe9,4096,128,0,1.0,300,0\n").encode("latin-1"))
    _fails(["roofline", "--target", "h100-sxm", "--shape", "1,32,4096,128", "--measured", "latin1.csv"], capsys,
           "not UTF-8")


def test_output_checks_come_before_the_work(in_tmp: Path, capsys, monkeypatch) -> None:
    import einsim.simulator.sweep as sweep

    monkeypatch.setattr(sweep, "grid", lambda *a, **k: pytest.fail("the sweep ran before its --out was checked"))
    _fails(["sweep", "--out", "nowhere/x.csv"], capsys, "does not exist")


def test_a_command_that_needs_the_gpu_stack_says_what_to_install(monkeypatch, capsys) -> None:
    from einsim.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["kernels", "list"])

    def needs_triton(_args):
        raise ModuleNotFoundError("No module named 'triton'", name="triton")

    args.handler = needs_triton  # a command importing triton on a machine without it
    monkeypatch.setattr(parser, "parse_args", lambda argv: args)
    monkeypatch.setattr("einsim.cli.build_parser", lambda: parser)
    _fails(["kernels", "list"], capsys, "needs triton", "pip install 'einsim[kernels]'")


@pytest.mark.parametrize("option, value", [("--max-kv-gib", "nan"), ("--max-kv-gib", "-1"), ("--time-budget", "nan"),
                                           ("--deadline", "inf")])
def test_fleet_numbers_that_cannot_mean_anything(option: str, value: str, capsys) -> None:
    _fails(["autotune", "--model", "llama3-8b", "--all-shapes", "--dry-run", "--storage", ":memory:",
            "--no-progress", "--kernel", "decode", option, value], capsys, option)


@pytest.mark.parametrize("option, value, message", [
    ("--workers", "0", "--workers must be at least 1, got 0"),  # 0 ran one worker, silently
    ("--workers", "100000", "--workers 100000: at most 64"),  # started processes until killed
    ("--gpus", "-1", "--gpus '-1': '-1' is not a GPU index"),
    ("--gpus", "abc", "--gpus 'abc': 'abc' is not a GPU index"),
    ("--gpus", "0,0", "--gpus '0,0': GPU 0 is given twice"),
])
def test_fleet_workers_and_gpus_are_checked_before_any_process_starts(option: str, value: str, message: str,
                                                                     in_tmp: Path, capsys, monkeypatch) -> None:
    import einsim.autotune.fleet as fleet

    monkeypatch.setattr(fleet, "spawn_workers", lambda *a, **k: pytest.fail("workers were started"))
    _fails(["autotune", "--model", "llama3-8b", "--all-shapes", "--dry-run", "--storage", "fleet.db",
            "--no-progress", "--kernel", "decode", option, value], capsys, message)


def test_workers_are_killed_when_waiting_for_them_fails(monkeypatch) -> None:
    """An error while waiting for the workers (not an interrupt, which stops them gracefully)
    kills them: none outlives the command."""
    import subprocess

    import einsim.autotune.fleet as fleet

    started = []

    class Worker:
        def __init__(self, *args, **kwargs):
            self.killed = False
            started.append(self)

        def wait(self, timeout=None):
            if not self.killed:
                raise MemoryError("simulated")
            return -9

        def poll(self):
            return -9 if self.killed else None

        def kill(self):
            self.killed = True

    monkeypatch.setattr(subprocess, "Popen", Worker)
    with pytest.raises(MemoryError):
        fleet.spawn_workers(["--dry-run"], 3, None, 60)
    assert len(started) == 3 and all(w.killed for w in started)
