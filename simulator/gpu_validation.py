"""The GPU model against measured H100 times: rows of ../shared/anchors/h100-peers.csv (torch SDPA
flash/cuDNN and FlexAttention, bf16, batch x seqlen = 16k, hidden 2048) or any CSV of the same
columns, each with its workload, the kernel style it stands for, and the prediction's error."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from einsim.simulator.gpu import simulate_gpu
from einsim.problem import Problem

# backend -> the kernel style of the GPU model it is (docs/simulator.md § GPU targets, "Kernel styles")
BACKEND_STYLES = {"sdpa_cudnn": "hopper", "flex": "triton", "sdpa_flash": "ampere"}
ANCHOR_TOKENS = 16384  # batch x sequence length of every prefill anchor
ANCHOR_HIDDEN = 2048  # heads x head dim
DECODE_BATCH = 16  # decode anchors: batch 16, 16 heads of 128 (read off their bytes: tbps x ms)
DECODE_HEADS = 16


@dataclass(frozen=True)
class Comparison:
    kind: str  # prefill | decode
    backend: str
    style: str
    problem: Problem
    measured_ms: float
    predicted_ms: float
    bound: str

    @property
    def error(self) -> float:
        """Signed relative error of the prediction (positive: the model is slower than measured)."""
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


def anchor_problem(kind: str, n: int, d: int, causal: bool) -> Problem:
    """The shape of an anchor row: prefill keeps batch x N = 16k tokens and heads x D = 2048."""
    if kind == "decode":
        return Problem(batch=DECODE_BATCH, q_heads=DECODE_HEADS, q_len=1, kv_len=n, head_dim=d, causal=causal, name=f"decode N={n} D={d}")
    return Problem(batch=ANCHOR_TOKENS // n, q_heads=ANCHOR_HIDDEN // d, q_len=n, kv_len=n, head_dim=d, causal=causal, name=f"prefill N={n} D={d}{' causal' if causal else ''}")


def compare(csv_path: str | Path, target: str = "h100-sxm", cascade: str = "fusemax", kinds: Iterable[str] = ("prefill", "decode")) -> list[Comparison]:
    """Predict every forward row of a peers CSV whose backend has a kernel style."""
    rows = []
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] not in kinds or row["backend"] not in BACKEND_STYLES:
                continue
            problem = anchor_problem(row["kind"], int(row["N"]), int(row["D"]), row["causal"] in ("1", "True", "true"))
            style = BACKEND_STYLES[row["backend"]]
            estimate = simulate_gpu(cascade, problem, target, {"kernel_style": style})
            rows.append(Comparison(row["kind"], row["backend"], style, problem, float(row["ms"]), estimate.latency_s * 1e3, estimate.bound))
    return rows


def summary(rows: list[Comparison]) -> dict[tuple[str, str], dict[str, float]]:
    """(kind, backend) -> mean and max absolute error and the mean signed error (bias)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row.kind, row.backend), []).append(row.error)
    return {
        key: {"rows": len(errors), "mean_abs": sum(abs(e) for e in errors) / len(errors), "max_abs": max(abs(e) for e in errors), "bias": sum(errors) / len(errors)}
        for key, errors in groups.items()
    }
