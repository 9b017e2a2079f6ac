"""Measured attention runs for the roofline: rows of a benchmark CSV (ours and the peers') and the
best trial of each study in a tuning database, placed at their compulsory-traffic intensity.

A benchmark times a kernel; it does not count its bytes. A measured point's x is therefore the
attention problem's compulsory intensity (FLOPs / bytes that must cross HBM), and a kernel that
moves more (naive eager attention writes the score matrix) sits further below the roofs than its
true intensity would place it (docs/plots.md § Measured points).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from einsim.errors import ConfigError, EinsimError, brief
from einsim.files import is_file, is_folder
from einsim.plots.roofs import RooflinePoint, lowest_roof
from einsim.problem import Problem

# CSV `kind` values that are a forward pass of attention over a whole sequence / one decode step.
PREFILL_KINDS = ("prefill", "forward", "fwd")
DECODE_KINDS = ("decode",)
BACKWARD_KINDS = ("backward", "bwd")


@dataclass(frozen=True)
class MeasuredRun:
    """One timed attention call."""

    origin: str  # "measured" (benchmark CSV) | "tuned" (tuning database)
    source: str  # the file or storage URL it came from
    kind: str  # prefill | decode | backward
    backend: str  # sdpa_flash, flex, einsim attention-fwd, ...
    problem: Any  # einsim.problem.Problem (batch/heads 1 when the file omits them)
    time_s: float
    flops_per_s: float  # as the benchmark reports it (2·(E+F) FLOP per visible pair)
    traffic_bytes: float  # compulsory bytes of the problem
    flops: float
    target: str | None = None  # the device it ran on, when the source says
    # the cascade it ran, when the source says (a compiled variant: benchmarks/bench_variants.py);
    # None for plain attention, shown beside any cascade of the same problem
    cascade: str | None = None

    @property
    def intensity(self) -> float:
        return self.flops / self.traffic_bytes


def _phase(kind: str) -> str:
    kind = str(kind or "").strip().lower()
    if kind in PREFILL_KINDS:
        return "prefill"
    if kind in DECODE_KINDS:
        return "decode"
    if kind in BACKWARD_KINDS:
        return "backward"
    return kind


def _work(problem: Any, phase: str) -> tuple[float, float]:
    """(FLOPs, compulsory bytes) of one call, as einsim's kernels count them."""
    if phase == "backward":
        return problem.backward_flops(), float(problem.backward_min_bytes())
    return problem.forward_flops(), float(problem.forward_min_bytes())


def _column(row: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = row.get(name)
        if value not in (None, ""):
            return value
    return None


def load_benchmark_csv(path: str | Path) -> list[MeasuredRun]:
    """Rows of a benchmark CSV with columns kind, backend, N, D, causal, ms, tflops, tbps (the format
    of benchmarks/bench_attention.py and benchmarks/data/h100-peers.csv). Optional columns:
    batch (B), heads (H), kv_heads, q_len, target, cascade (the cascade a compiled variant ran:
    its rows are placed only on that cascade's roofline). `ceiling` rows (copy, matmul) are not attention
    runs and are skipped; a row needs a positive ms and tflops or tbps."""
    path = Path(path)
    if is_folder(path):
        raise ConfigError(f"{brief(str(path))}: is a folder, not a benchmark CSV")
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the benchmark CSV ({error.strerror})") from None
    runs = []
    with handle:
        try:
            runs = _read_benchmark_rows(path, handle)
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text: save the CSV as UTF-8") from None
        except csv.Error as error:
            raise ConfigError(f"{path}: not a readable CSV: {error}") from None
    return runs


def _read_benchmark_rows(path: Path, handle: Any) -> list[MeasuredRun]:
    runs = []
    reader = csv.DictReader(handle)
    missing = {"kind", "backend", "N", "D", "ms"} - set(reader.fieldnames or ())
    if missing:
        raise ConfigError(f"{path}: expected columns kind, backend, N, D, causal, ms, tflops, tbps; "
                          f"missing {', '.join(sorted(missing))}")
    for line, row in enumerate(reader, start=2):
        phase = _phase(row["kind"])
        if phase == "ceiling":
            continue
        try:
            n, d = int(float(row["N"])), int(float(row["D"]))
            ms = float(row["ms"])
            tflops = float(row.get("tflops") or 0)
            tbps = float(row.get("tbps") or 0)
            causal = str(row.get("causal", "0")).strip().lower() in ("1", "true", "yes")
            batch = int(float(_column(row, "batch", "B") or 1))
            heads = int(float(_column(row, "heads", "H", "q_heads") or 1))
            kv_heads = int(float(_column(row, "kv_heads", "KV") or heads))
            q_len = int(float(_column(row, "q_len") or (1 if phase == "decode" else n)))
        except (ValueError, OverflowError, TypeError) as error:  # "x", nan, inf or a missing cell where a size belongs
            raise ConfigError(f"{path}:{line}: {brief(str(error))}") from None
        if not all(math.isfinite(v) for v in (ms, tflops, tbps)):
            continue  # a failed measurement (NaN/inf): no point to draw, and invalid in --json
        if ms <= 0 or n <= 0 or d <= 0 or (tflops <= 0 and tbps <= 0):
            continue
        problem = Problem(batch=batch, q_heads=heads, kv_heads=kv_heads, q_len=q_len, kv_len=n,
                                   head_dim=d, causal=causal)
        flops, traffic = _work(problem, phase)
        # Without batch and heads in the file, FLOPs and bytes are those of one (batch, head):
        # the intensity is exact (both scale with B·H) and so is FLOP/s, taken from the file.
        rate = tflops * 1e12 if tflops > 0 else flops / traffic * tbps * 1e12
        runs.append(MeasuredRun(
            origin="measured", source=str(path), kind=phase, backend=row["backend"], problem=problem,
            time_s=ms / 1e3, flops_per_s=rate, traffic_bytes=traffic, flops=flops,
            target=_column(row, "target", "gpu"), cascade=_column(row, "cascade")))
    return runs


def load_tuning_db(storage: str) -> list[MeasuredRun]:
    """The best measured trial of every study in an Optuna storage written by `einsim autotune`
    (studies whose objective was the simulator, dry runs, are skipped)."""
    import optuna

    from einsim.autotune.naming import problem_from_tag
    from einsim.autotune.storage import open_storage, redact_url, resolve_storage_url
    from einsim.kernels.registry import get_kernel

    url = resolve_storage_url(storage)
    if url.startswith("sqlite:///") and not is_file(url.removeprefix("sqlite:///")):
        # SQLite would create an empty database there: a typo must not leave a file behind.
        raise ConfigError(f"tuning storage {brief(url)}: no such file")
    rdb = open_storage(url)  # bounded connect, the installed PostgreSQL driver, password hidden
    url = redact_url(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        summaries = optuna.get_all_study_summaries(storage=rdb, include_best_trial=True)
    except Exception as error:  # sqlalchemy errors: not an Optuna database, no such table
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"cannot read tuning storage {url}: {first[:300]}") from None
    runs = []
    for summary in summaries:
        attrs = summary.user_attrs
        best = summary.best_trial
        if (best is None or best.value is None or not math.isfinite(best.value) or best.value <= 0
                or attrs.get("objective", "gpu") == "simulator"):
            continue
        kernel, tag = attrs.get("kernel"), attrs.get("problem")
        if not kernel or not tag:
            continue
        try:
            spec = get_kernel(str(kernel))
            problem = problem_from_tag(str(tag))
        except (EinsimError, KeyError):
            continue
        phase = "backward" if kernel.endswith("-bwd") else ("decode" if problem.q_len == 1 else "prefill")
        flops, traffic = float(spec.flops(problem)), float(spec.min_bytes(problem))
        runs.append(MeasuredRun(
            origin="tuned", source=url, kind=phase, backend=f"{kernel} (tuned)", problem=problem,
            time_s=float(best.value), flops_per_s=flops / float(best.value), traffic_bytes=traffic,
            flops=flops, target=attrs.get("target")))
    return runs


def load_measured(csv_paths: Sequence[str | Path] = (), storages: Sequence[str] = ()) -> list[MeasuredRun]:
    """Every run of the benchmark CSVs and the best trials of the tuning databases."""
    runs: list[MeasuredRun] = []
    for path in csv_paths:
        runs += load_benchmark_csv(path)
    for storage in storages:
        runs += load_tuning_db(storage)
    return runs


def matches(run: MeasuredRun, problem: Problem, match: str = "shape") -> bool:
    """Is `run` the workload's attention problem? shape: same phase, head dim, mask and lengths;
    lengths: any sequence length; all: any measured forward run."""
    if match not in ("shape", "lengths", "all"):
        raise ConfigError(f"measured match must be shape, lengths or all, got {match!r}")
    phase = "decode" if problem.q_len == 1 and problem.kv_len > 1 else "prefill"
    if match == "all":
        return run.kind in ("prefill", "decode")
    p = run.problem
    same = (run.kind == phase and p.head_dim == problem.head_dim and p.causal == problem.causal
            and p.window == problem.window)
    if match == "lengths":
        return same
    return same and p.kv_len == problem.kv_len and p.q_len == problem.q_len


def measured_points(runs: Sequence[MeasuredRun], problem: Problem, target: Any, roofs: Sequence[Any],
                    match: str = "shape", cascades: Sequence[str] | None = None) -> tuple[list[Any], str]:
    """RooflinePoints of the runs that belong on `target`'s roofline for `workload`, and a note
    naming how many were left out (empty when none were). A run of a named cascade (a compiled
    variant) belongs only beside that cascade (`cascades`: the names on the figure)."""

    if not runs:
        return [], ""
    points = []
    for run in runs:
        if run.target and run.target != target.name:
            continue
        if not run.target and target.kind != "gpu":
            continue  # a benchmark file without a target column holds GPU runs
        if not matches(run, problem, match):
            continue
        if run.cascade and cascades is not None and run.cascade not in cascades:
            continue
        attainable, limiting = lowest_roof(roofs, run.intensity, None)
        p = run.problem
        shape = f"N={p.kv_len} D={p.head_dim}" + (" causal" if p.causal else "")
        points.append(RooflinePoint(
            target=target.name, origin=run.origin, label=run.backend, name=run.backend, einsum=None,
            flops=run.flops, traffic_bytes=run.traffic_bytes, time_s=run.time_s,
            intensity=run.intensity, flops_per_s=run.flops_per_s, bound="", bound_role="",
            attainable_flops_per_s=attainable, limiting_roof=limiting,
            problem_label=f"{run.kind} {shape}", detail=run.source))
    left = len([r for r in runs if not r.target or r.target == target.name]) - len(points)
    note = ""
    if left > 0 and target.kind == "gpu":
        note = (f"{left} measured run(s) left out: not {problem.name or 'this workload'}'s problem "
                f"(match={match}: same phase, head dim, mask" + (", lengths" if match == "shape" else "")
                + ", and the cascade when the run names one)")
    return points, note
