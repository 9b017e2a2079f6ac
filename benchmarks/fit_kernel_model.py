#!/usr/bin/env python3
"""Fit the kernel-time model's free constants (simulator/kernel_model.py ModelParams) to measured
configs: random search, then coordinate refinement, maximising the mean Spearman rank correlation
over the shapes of a kernel (ranks are what the autotuner uses). CPU only.

    PYTHONPATH=. python benchmarks/fit_kernel_model.py MEASUREMENTS.csv --kernel attention-fwd \
        [--holdout SHAPE_SUBSTRING]

--holdout leaves the shapes matching it out of the fit and reports their correlation apart,
so the gain can be told from overfitting. Prints the ModelParams to paste in; docs/autotune.md
records the fitted values and the held-out numbers.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scipy.stats import spearmanr  # noqa: E402

from benchmarks.validate_autotune import SHAPES, shape_id  # noqa: E402
from einsim.kernels.registry import get_kernel  # noqa: E402
from einsim.simulator.kernel_model import DEFAULT_PARAMS, predict_kernel, roofs_of  # noqa: E402

RANGES = {
    "attention-fwd": {
        "wgmma_efficiency": (0.5, 1.0), "mma_sync_efficiency": (0.15, 0.6), "wgmma_n_exponent": (0.0, 0.7),
        "async_overlap": (0.0, 0.9), "load_latency_s": (2e-7, 3e-6), "stage_offset": (1, 2),
        "program_overhead_s": (0.0, 6e-6), "pipeline_fills_per_loop": (0.0, 3.0),
        "vector_ops_per_score": (2.0, 14.0), "mask_ops_per_score": (0.0, 12.0),
        "tile_overhead_cycles": (0.0, 600.0),
    },
    "decode": {
        "decode_load_latency_s": (2e-7, 6e-6), "decode_program_overhead_s": (0.0, 8e-6),
        "decode_tile_overhead_cycles": (0.0, 3000.0), "hbm_efficiency": (0.3, 1.0),
    },
}


def load(path: str, kernel: str):
    problems = {shape_id(k, p): p for k, p in SHAPES}
    spec = get_kernel(kernel)
    data: dict[str, list] = {}
    for row in csv.DictReader(open(path)):
        if row["kernel"] != kernel or row["measured_s"] in ("", None):
            continue
        config = spec.config_type(**json.loads(row["config"]))
        data.setdefault(row["shape"], []).append((config, float(row["measured_s"])))
    return {shape: (problems[shape], rows) for shape, rows in data.items()}


def score(params, kernel, data, roofs) -> dict[str, float]:
    out = {}
    for shape, (problem, rows) in data.items():
        predicted = [predict_kernel(kernel, config, problem, roofs, params=params).time_s for config, _ in rows]
        out[shape] = spearmanr(predicted, [m for _, m in rows]).statistic
    return out


def sample(ranges, rng, around=None, scale=1.0):
    values = {}
    for name, (lo, hi) in ranges.items():
        if isinstance(lo, int) and isinstance(hi, int):
            values[name] = rng.randint(lo, hi)
            continue
        centre = getattr(around, name) if around is not None else None
        if centre is None:
            values[name] = rng.uniform(lo, hi)
        else:
            values[name] = min(hi, max(lo, rng.gauss(centre, (hi - lo) * 0.15 * scale)))
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv")
    parser.add_argument("--kernel", default="attention-fwd")
    parser.add_argument("--holdout", help="shapes containing this text are left out of the fit")
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    roofs = roofs_of("h100-sxm")
    data = load(args.csv, args.kernel)
    fit = {s: v for s, v in data.items() if not (args.holdout and args.holdout in s)}
    held = {s: v for s, v in data.items() if args.holdout and args.holdout in s}
    ranges = RANGES[args.kernel]

    def objective(params) -> float:
        values = score(params, args.kernel, fit, roofs)
        return statistics.mean(values.values()) + 0.25 * min(values.values())

    best = DEFAULT_PARAMS
    best_value = objective(best)
    print(f"start: {best_value:.3f} {score(best, args.kernel, data, roofs)}", flush=True)
    for i in range(args.samples):
        local = i >= args.samples // 3
        candidate = dataclasses.replace(DEFAULT_PARAMS, **sample(ranges, rng, best if local else None,
                                                                 scale=0.5 if local else 1.0))
        value = objective(candidate)
        if value > best_value:
            best, best_value = candidate, value
            print(f"{i}: {value:.3f}", flush=True)
    print("fitted:", {name: round(getattr(best, name), 9) for name in ranges})
    print("fit shapes:", {s: round(v, 3) for s, v in score(best, args.kernel, fit, roofs).items()})
    if held:
        print("held-out shapes:", {s: round(v, 3) for s, v in score(best, args.kernel, held, roofs).items()})
        print("held-out with defaults:", {s: round(v, 3) for s, v in score(DEFAULT_PARAMS, args.kernel, held, roofs).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
