"""Fit the one constant of the GPU cost model that is particular to the chunked linear-attention
walk — the dependent chain each chunk step waits for (`WALK_STEP_LATENCY_S` in
simulator/gpu_cost/linear.py: the state carried from chunk to chunk through dependent MMAs,
which programs sharing an SM overlap) — to the kernels' measured times, and report the model's
error on every measured row, the held-out lengths (benchmarks/data/README.md: N = 2048 and 8192)
separately.

    python benchmarks/fit_linear_walk.py benchmarks/data/h200_linear_w4.csv [more CSVs]

Rows: bench_linear.py's CSV (`kind` fwd/bwd with the default configs, sweep-fwd/sweep-bwd with
the config in `config`) of einsim's linear kernels (no decay and Lightning decay). The fit is a
grid search of the latency minimising the mean |log(predicted / measured)| over the rows not held
out; the model's other constants stay as fitted for every kernel (benchmarks/fit_gpu_model.py).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from einsim.einsum_cascades import load_cascade  # noqa: E402
from einsim.kernels.linear.config import (LinearBackwardConfig, LinearConfig,  # noqa: E402
                                          backward_default_config, default_config)
from einsim.problem import Problem  # noqa: E402
from einsim.simulator.gpu_cost import kernel_cost  # noqa: E402
from einsim.simulator.gpu_cost import linear as linear_model  # noqa: E402
from einsim.targets import load_target  # noqa: E402

HELD_OUT_LENGTHS = (2048, 8192)  # benchmarks/data/README.md: held out of every fit, by length
CASCADES = {"none": "linear-attention-identity", "lightning": "linear-attention-decay"}
BACKENDS = {"einsim-linear": "none", "einsim-linear-decay": "lightning"}


def read_rows(paths) -> list[dict]:
    """Measured rows of einsim's linear kernels: direction, decay, problem, config, seconds."""
    rows = []
    for path in paths:
        with open(path, newline="") as handle:
            lines = [line for line in handle if not line.startswith("#")]
        for row in csv.DictReader(lines):
            kind, backend = row.get("kind", ""), row.get("backend", "")
            if backend not in BACKENDS or not row.get("ms") or kind not in ("fwd", "bwd", "sweep-fwd", "sweep-bwd"):
                continue
            direction = "forward" if kind.endswith("fwd") else "backward"
            length, batch = int(row["N"]), int(row["B"])
            heads, dim = int(row.get("H") or 16), int(row.get("D") or 128)
            problem = Problem(batch=batch, q_heads=heads, kv_heads=heads, q_len=length, kv_len=length,
                              head_dim=dim, causal=True, dtype="bf16")
            if row.get("config"):
                config = eval(row["config"], {"LinearConfig": LinearConfig,  # noqa: S307 - our own CSV's repr
                                              "LinearBackwardConfig": LinearBackwardConfig})
            else:
                config = (default_config if direction == "forward" else backward_default_config)(problem)
            rows.append({"direction": direction, "decay": BACKENDS[backend], "problem": problem, "config": config,
                         "seconds": float(row["ms"]) * 1e-3, "source": Path(path).name})
    return rows


def mapping_of(config) -> dict:
    mapping = {"block_n": config.CHUNK, "state_columns": config.BLOCK_C, "segment": config.SEGMENT,
               "num_warps": config.num_warps, "num_stages": config.num_stages}
    if isinstance(config, LinearBackwardConfig):
        mapping["store_states"] = config.store_states
    return mapping


def predict(row: dict, target) -> float:
    cascade = load_cascade(CASCADES[row["decay"]])
    return kernel_cost(cascade, row["problem"], target, mapping_of(row["config"]), row["direction"]).time_s


def errors_at(latency_s: float, rows: list[dict], target) -> list[float]:
    """log(predicted / measured) of every row with the walk's step latency set to latency_s."""
    saved = linear_model.WALK_STEP_LATENCY_S
    linear_model.WALK_STEP_LATENCY_S = latency_s
    try:
        return [math.log(predict(row, target) / row["seconds"]) for row in rows]
    finally:
        linear_model.WALK_STEP_LATENCY_S = saved


def summary(errors: list[float]) -> str:
    if not errors:
        return "no rows"
    relative = [math.exp(e) - 1 for e in errors]
    return (f"{len(errors)} rows, mean |error| {sum(abs(r) for r in relative) / len(relative):.1%}, "
            f"worst {max(relative, key=abs):+.1%}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measured", nargs="+")
    parser.add_argument("--target", default="h200")
    parser.add_argument("--max-us", type=float, default=12.0, help="the longest latency tried (us)")
    parser.add_argument("--show", action="store_true", help="print every row's prediction")
    args = parser.parse_args(argv)
    target = load_target(args.target)
    rows = read_rows(args.measured)
    fit = [r for r in rows if r["problem"].q_len not in HELD_OUT_LENGTHS]
    held = [r for r in rows if r["problem"].q_len in HELD_OUT_LENGTHS]
    print(f"{len(fit)} rows to fit, {len(held)} held out (N in {HELD_OUT_LENGTHS})")
    print(f"before (WALK_STEP_LATENCY_S = {linear_model.WALK_STEP_LATENCY_S * 1e6:.2f} us): fit "
          f"{summary(errors_at(linear_model.WALK_STEP_LATENCY_S, fit, target))}; held out "
          f"{summary(errors_at(linear_model.WALK_STEP_LATENCY_S, held, target))}")
    def loss(us: float) -> float:
        return sum(abs(e) for e in errors_at(us * 1e-6, fit, target))

    coarse = min((args.max_us * i / 24 for i in range(25)), key=loss)  # then 0.02 us around the best
    best = min((max(0.0, coarse + args.max_us / 24 * (i - 25) / 25) for i in range(51)), key=loss)
    print(f"fitted WALK_STEP_LATENCY_S = {best:.2f} us: fit {summary(errors_at(best * 1e-6, fit, target))}; "
          f"held out {summary(errors_at(best * 1e-6, held, target))}")
    if args.show:
        for row, error in zip(rows, errors_at(best * 1e-6, rows, target)):
            tag = "held" if row["problem"].q_len in HELD_OUT_LENGTHS else "fit"
            print(f"  {tag:4s} {row['direction']:8s} {row['decay']:9s} N={row['problem'].q_len:6d} "
                  f"{row['seconds'] * 1e3:8.3f} ms measured, {row['seconds'] * math.exp(error) * 1e3:8.3f} predicted "
                  f"({math.exp(error) - 1:+.1%}) {row['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
