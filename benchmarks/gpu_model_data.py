"""The measured GPU times in benchmarks/data as inputs of the one GPU cost model: one
`Measurement` per row (its problem, the kernel style and mapping that stand for the backend, the
time measured, whether it is held out of every fit). Used by fit_gpu_model.py (the fit),
validate_gpu_model.py (the tables of docs/validation.md) and tests/test_gpu_cost_model.py.

Held out: every row whose sequence length is 2048 or 8192 (benchmarks/data/README.md).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from einsim.autotune.predict import kernel_mapping  # noqa: E402
from einsim.einsum_cascades import load_cascade  # noqa: E402
from einsim.kernels.registry import get_kernel  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.simulator.gpu_cost import GpuMapping, KernelCost, kernel_cost  # noqa: E402
from einsim.simulator.gpu_cost.styles import FittedModel  # noqa: E402
from einsim.targets import load_target  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
HELD_OUT_LENGTHS = (2048, 8192)
TOKENS, HIDDEN = 16384, 2048  # the anchors' shapes: batch x N = 16k tokens, heads x D = 2048
PEER_STYLES = {"sdpa_cudnn": "cudnn", "cudnn": "cudnn", "sdpa_flash": "fa2", "fa2": "fa2", "flex": "flex"}
DIRECTIONS = {"prefill": "forward", "fwd": "forward", "fwd-odd": "forward", "backward": "backward",
              "bwd": "backward", "decode": "forward"}


@dataclass(frozen=True)
class Measurement:
    """One measured kernel time and what the model needs to predict it."""

    source: str  # the data file
    target: str  # the target preset of the GPU it ran on
    backend: str  # as the file names it
    style: str  # the kernel style that stands for it
    kind: str  # prefill | backward | decode | config (one config of an autotune sweep)
    cascade: str
    problem: Problem
    mapping: GpuMapping
    direction: str
    measured_s: float
    held_out: bool
    label: str

    @property
    def group(self) -> tuple[str, str, str]:
        """Rows reported (and weighted in the fit) together."""
        return (self.source, self.style if self.kind != "config" else f"{self.style} configs", self.kind)


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def anchor_problem(n: int, d: int, causal: bool, dtype: str = "bf16") -> Problem:
    """The anchors' prefill shape: batch x N = 16k tokens, heads x D = 2048."""
    return Problem(batch=max(1, TOKENS // n), q_heads=HIDDEN // d, q_len=n, kv_len=n, head_dim=d, causal=causal,
                   dtype=dtype)


def _held_out(problem: Problem) -> bool:
    return problem.q_len in HELD_OUT_LENGTHS or (problem.q_len == 1 and problem.kv_len in HELD_OUT_LENGTHS)


def _ours(kernel: str, problem: Problem, config=None, limits=None) -> tuple[str, GpuMapping, str]:
    """(cascade, mapping, direction) of einsim's kernel `kernel` at `config` (its default if None)."""
    spec = get_kernel(kernel)
    return kernel_mapping(spec, config or spec.default_config(problem), problem, limits)


def _measurement(source: str, target: str, backend: str, kind: str, problem: Problem, seconds: float,
                 label: str, config=None) -> Measurement | None:
    direction = DIRECTIONS.get(kind, "forward")
    if backend == "einsim":
        kernel = "decode" if kind == "decode" else ("attention-bwd" if direction == "backward" else "attention-fwd")
        cascade, mapping, direction = _ours(kernel, problem, config)
        style_name = mapping.kernel_style
    elif backend in PEER_STYLES:
        style_name, cascade, mapping = PEER_STYLES[backend], "fusemax", GpuMapping(kernel_style=PEER_STYLES[backend])
    else:
        return None
    return Measurement(source, target, backend, style_name, "decode" if kind == "decode" else (
        "backward" if direction == "backward" else ("prefill" if kind != "config" else "config")),
        cascade, problem, mapping, direction, seconds, _held_out(problem), label)


def h100_peers(path: Path = DATA / "h100-peers.csv") -> list[Measurement]:
    """../shared/anchors/h100-peers.csv: prefill, backward (anchor shapes), decode (batch 16,
    16 heads of 128, one query; read off the rows' bytes / time)."""
    found = []
    for row in _read(path):
        kind = row["kind"]
        if kind not in ("prefill", "backward", "decode"):
            continue
        n, d, causal = int(row["N"]), int(row["D"]), row["causal"] == "1"
        problem = (Problem(batch=16, q_heads=16, q_len=1, kv_len=n, head_dim=d) if kind == "decode"
                   else anchor_problem(n, d, causal))
        m = _measurement(path.name, "h100-sxm", row["backend"], kind, problem, float(row["ms"]) / 1e3,
                         f"{kind} N{n} D{d}{' causal' if causal else ''}")
        if m is not None:
            found.append(m)
    return found


def h100_kernels_v4(path: Path = DATA / "h100_kernels_v4.csv") -> list[Measurement]:
    """einsim's forward/backward and its peers in the same run (docs/performance.md v4)."""
    found = []
    for row in _read(path):
        n, d, causal = int(row["N"]), int(row["D"]), row["causal"] == "1"
        m = _measurement(path.name, "h100-sxm", row["backend"], row["kind"], anchor_problem(n, d, causal),
                         float(row["ms"]) / 1e3, f"{row['kind']} N{n} D{d}{' causal' if causal else ''}")
        if m is not None:
            found.append(m)
    return found


_CASE = re.compile(r"D(?P<d>\d+) N(?P<n>\d+) c(?P<c>[01])")
_ODD = re.compile(r"B(?P<b>\d+) Hq(?P<hq>\d+) Hk(?P<hk>\d+) N(?P<n>\d+) D(?P<d>\d+) c(?P<c>[01])")
_DECODE = re.compile(r"B(?P<b>\d+) Hq(?P<hq>\d+) Hk(?P<hk>\d+) L(?P<l>\d+)")


def h200_peers(path: Path = DATA / "h200-peers.csv") -> list[Measurement]:
    """../shared/anchors/h200-peers.csv: forward/backward (anchor shapes), one odd GQA shape,
    decode (host-overhead and CUDA-graph rows are not kernel times and are skipped)."""
    found = []
    rows = _read(path)
    # einsim's decode at B1 L131072 ran at 1.46 TB/s eagerly but 4.22 TB/s replayed as a CUDA graph:
    # the eager time is its host launch path, not the kernel; the graph replay's bandwidth is used
    graphed = {row["case"]: float(row["value"]) for row in rows
               if row["kind"] == "decode-cudagraph" and row["backend"] == "einsim"}
    for row in rows:
        kind, case = row["kind"], row["case"]
        if kind in ("fwd", "bwd") and (match := _CASE.fullmatch(case)):
            problem = anchor_problem(int(match["n"]), int(match["d"]), match["c"] == "1")
        elif kind == "fwd-odd" and (match := _ODD.fullmatch(case)):
            n = int(match["n"])
            problem = Problem(batch=int(match["b"]), q_heads=int(match["hq"]), kv_heads=int(match["hk"]), q_len=n,
                              kv_len=n, head_dim=int(match["d"]), causal=match["c"] == "1")
        elif kind == "decode" and (match := _DECODE.fullmatch(case)):
            problem = Problem(batch=int(match["b"]), q_heads=int(match["hq"]), kv_heads=int(match["hk"]), q_len=1,
                              kv_len=int(match["l"]), head_dim=128)
        else:
            continue
        seconds, label = float(row["ms"]) / 1e3, f"{kind} {case}"
        if kind == "decode" and row["backend"] == "einsim" and case in graphed:
            seconds = get_kernel("decode").min_bytes(problem) / (graphed[case] * 1e12)
            label += " (CUDA graph replay)"
        m = _measurement(path.name, "h200", row["backend"], kind, problem, seconds, label)
        if m is not None:
            found.append(m)
    return found


def _config(kernel: str, text: str):
    config_type = get_kernel(kernel).config_type
    values = json.loads(text)
    known = {f.name for f in fields(config_type)}
    return config_type(**{k: v for k, v in values.items() if k in known})


_SHAPE = re.compile(r"B(?P<b>\d+)-H(?P<h>\d+)(?:-KV(?P<kv>\d+))?(?:-Q(?P<q>\d+))?-N(?P<n>\d+)-D(?P<d>\d+)-(?P<mask>causal|full)-(?P<dtype>\w+)")


def h100_autotune_configs(path: Path = DATA / "h100_autotune_configs.csv",
                          kernels: tuple[str, ...] = ("attention-fwd",)) -> list[Measurement]:
    """Every declared config of einsim's forward on three shapes (validate_autotune.py); decode's
    configs are left out by default: their retest correlates with the first pass at -0.25..0.25
    (docs/autotune.md), so they pin noise, not the model."""
    found = []
    for row in _read(path):
        if row["kernel"] not in kernels or row["failure"] or not row["measured_s"]:
            continue
        match = _SHAPE.search(row["shape"])
        n, kv = int(match["n"]), match["kv"]
        q_len = int(match["q"]) if match["q"] else n
        problem = Problem(batch=int(match["b"]), q_heads=int(match["h"]), kv_heads=int(kv) if kv else None,
                          q_len=q_len, kv_len=n, head_dim=int(match["d"]), causal=match["mask"] == "causal",
                          dtype=match["dtype"])
        config = _config(row["kernel"], row["config"])
        cascade, mapping, direction = _ours(row["kernel"], problem, config)
        seconds = float(row["measured_s"])
        found.append(Measurement(path.name, "h100-sxm", "einsim", mapping.kernel_style, "config", cascade, problem, mapping,
                                 direction, seconds, _held_out(problem), f"{row['shape']} {row['config']}"))
    return found


def h100_ours_multipass_decode(path: Path = DATA / "h100_ours_multipass_decode.csv") -> list[Measurement]:
    """einsim's 2-/3-pass and split-KV decode kernels (docs/performance.md), at their configs."""
    found = []
    for row in _read(path):
        n = {k: int(row[k]) for k in ("batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim", "causal")}
        problem = Problem(batch=n["batch"], q_heads=n["heads"], kv_heads=n["kv_heads"], q_len=n["q_len"],
                          kv_len=n["kv_len"], head_dim=n["head_dim"], causal=bool(n["causal"]))
        if row["kernel"] == "decode":
            spec = get_kernel("decode")
            config = spec.config_type(BLOCK_M=spec.default_config(problem).BLOCK_M, BLOCK_N=128, num_warps=4,
                                      num_stages=3)
            kernel, kind = "decode", "decode"
        else:
            kernel, kind = f"{row['kernel']}-fwd", "prefill"
            spec = get_kernel(kernel)
            config = spec.config_type(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3,
                                      MATERIALIZE=row["mapping"] == "materialize")
        cascade, mapping, direction = _ours(kernel, problem, config)
        label = f"{row['kernel']} {row['mapping']} B{n['batch']} H{n['heads']}/{n['kv_heads']} N{n['kv_len']}" + (
            " causal" if n["causal"] else "")
        found.append(Measurement(path.name, "h100-sxm", f"einsim {row['kernel']} {row['mapping']}", mapping.kernel_style, kind,
                                 cascade, problem, mapping, direction, float(row["measured_ms"]) / 1e3,
                                 _held_out(problem), label))
    return found


# later GPU windows' CUDA-graph replays of the sweep's short points (benchmarks/data/README.md)
REPLAY_FILES = ("h200_attention_w2.csv", "h200_attention_w4.csv")


def graph_replays(files: tuple[str, ...] = REPLAY_FILES) -> dict[tuple, tuple[float, str]]:
    """(kind, backend, N, D, causal) -> (seconds of one CUDA-graph replay, file) of every row of
    `files` whose note records a replay (`graph_ms=...`); a later file's replay wins."""
    found: dict[tuple, tuple[float, str]] = {}
    for name in files:
        path = DATA / name
        if not path.is_file():
            continue
        for row in _read(path):
            match = re.search(r"graph_ms=([0-9.eE+-]+)", row.get("note") or "")
            if match:
                key = (row["kind"], row["backend"], int(row["N"]), int(row["D"]), row["causal"] == "1")
                found[key] = (float(match.group(1)) / 1e3, name)
    return found


def h200_sweep(path: Path = DATA / "h200_attention.csv", replay_files: tuple[str, ...] = REPLAY_FILES,
               held_out: bool = False) -> list[Measurement]:
    """benchmarks/measure_gpu_model.py's attention sweep (N = 128..16k), when it has been run.
    A point that a later window replayed as a CUDA graph (`graph_replays`) is measured by the
    replay: the GPU's time without the host's launch path, which is what the model predicts (W1
    timed every point eagerly; at short N a call's host path can set its pace)."""
    if not path.is_file():
        return []
    replays = graph_replays(replay_files)
    found = []
    for row in _read(path):
        n, d, causal = int(row["N"]), int(row["D"]), row["causal"] == "1"
        problem = Problem(batch=int(row["batch"]), q_heads=int(row["heads"]), q_len=n, kv_len=n, head_dim=d,
                          causal=causal)
        seconds, label = float(row["ms"]) / 1e3, f"{row['kind']} N{n} D{d}{' causal' if causal else ''}"
        replay = replays.get((row["kind"], row["backend"], n, d, causal))
        if replay is not None:
            seconds, label = replay[0], f"{label} (graph, {replay[1].removeprefix('h200_attention_').removesuffix('.csv').upper()})"
        m = _measurement(path.name, "h200", row["backend"], row["kind"], problem, seconds, label)
        if m is not None:
            found.append(replace(m, held_out=True) if held_out else m)
    return found


@dataclass(frozen=True)
class LayerMeasurement:
    """One measured operator (or the whole layer, op = "layer") of a decoder layer."""

    source: str
    target: str
    model: str
    mode: str
    batch: int
    length: int
    op: str
    measured_s: float  # one CUDA-graph replay of the op (or of the whole layer)
    held_out: bool

    @property
    def label(self) -> str:
        return f"{self.model} {self.mode} B{self.batch} {'N' if self.mode == 'prefill' else 'L'}{self.length} {self.op}"


# the measurement's operator names -> the model's; attention is SDPA's default dispatch, which on
# the H200 with torch 2.11 is cuDNN for these shapes (its times match the cudnn style within 5 %,
# FA2's are 1.8x; benchmarks/data/h200_layer.csv)
LAYER_OPS = {"rms_norm_1": "norm_1", "rms_norm_2": "norm_2"}
LAYER_ATTENTION_STYLE = "cudnn"


def h200_layers(path: Path = DATA / "h200_layer.csv") -> list[LayerMeasurement]:
    """benchmarks/measure_gpu_model.py's llama3-8b layers (whole layer and each operator)."""
    if not path.is_file():
        return []
    found = []
    for row in _read(path):
        if not row["graph_ms"]:
            continue
        length = int(row["length"])
        found.append(LayerMeasurement(path.name, "h200", row["model"], row["mode"], int(row["batch"]), length,
                                      LAYER_OPS.get(row["op"], row["op"]), float(row["graph_ms"]) / 1e3,
                                      row["mode"] == "prefill" and length in HELD_OUT_LENGTHS))
    return found


@lru_cache(maxsize=4)
def _model(name: str):
    from einsim.simulator import load_model

    return load_model(name)


def predict_layer(m: LayerMeasurement, model: FittedModel | None = None) -> float | None:
    """The model's time of the measured operator (or layer); None for an op the model does not name."""
    from einsim.simulator.gpu_cost.layer import layer_cost

    cost = _layer_cost(m.model, m.mode, m.batch, m.length, m.target, model)
    if m.op == "layer":
        return cost.time_s
    return next((op.time_s for op in cost.operators if op.name == m.op), None)


def _layer_cost(name: str, mode: str, batch: int, length: int, target: str, model: FittedModel | None):
    from einsim.simulator.gpu_cost.layer import layer_cost

    return layer_cost(_model(name), length, _target(target), mode, batch, LAYER_ATTENTION_STYLE, fit=model)


# measured after the last fit, at lengths and head dims no fit has seen (768, 3072; D = 96): held
# out whole; a row at N <= 1k is measured by its own CUDA-graph replay (benchmarks/data/README.md)
VALIDATION_FILES = ("h200_attention_w5.csv",)


def h200_validation() -> list[Measurement]:
    """The validation-only sweeps (VALIDATION_FILES), every row held out."""
    return [m for name in VALIDATION_FILES
            for m in h200_sweep(DATA / name, replay_files=(name,), held_out=True)]


LOADERS = (h100_peers, h100_kernels_v4, h200_peers, h100_autotune_configs, h100_ours_multipass_decode, h200_sweep,
           h200_validation)


@lru_cache(maxsize=1)
def measurements() -> tuple[Measurement, ...]:
    """Every measured row of every file, in file order."""
    return tuple(m for loader in LOADERS for m in loader())


@lru_cache(maxsize=16)
def _cascade(name: str):
    return load_cascade(name)


@lru_cache(maxsize=4)
def _target(name: str):
    return load_target(name)


def predict(m: Measurement, model: FittedModel | None = None) -> KernelCost:
    return kernel_cost(_cascade(m.cascade), m.problem, _target(m.target), m.mapping, m.direction, model)


def errors(rows, model: FittedModel | None = None) -> list[float]:
    """Signed relative error (predicted / measured - 1) of each row."""
    return [predict(m, model).time_s / m.measured_s - 1.0 for m in rows]


def summary(rows, errs) -> dict[tuple, dict[str, float]]:
    """Group -> rows, mean and max |error|, mean signed error."""
    groups: dict[tuple, list[float]] = {}
    for m, e in zip(rows, errs):
        groups.setdefault(m.group, []).append(e)
    return {key: {"rows": len(v), "mean_abs": sum(map(abs, v)) / len(v), "max_abs": max(map(abs, v)),
                  "bias": sum(v) / len(v)} for key, v in groups.items()}


def mean_abs(values) -> float:
    values = list(values)
    return sum(map(abs, values)) / len(values) if values else math.nan
