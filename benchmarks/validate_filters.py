"""The GPU cost model against bench_filters.py's measurements of compiled cascades whose filters
read data (packed documents, block-sparse), and both simulators' estimates of masks and filters
side by side (docs/validation.md § Filters that read data, docs/simulator.md § Filters).

    python benchmarks/validate_filters.py --measured benchmarks/data/h200_filters_w4.csv
    python benchmarks/validate_filters.py --table          # estimates only: masks vs filters

With --measured: for every row of the CSV the model prices the same cascade, shape, filter
tensors (the CSV's `inputs`, expanded exactly as the benchmark expanded them) and the kernel's
tile shape (its `config`), with einsim's kernel style, and prints predicted vs measured time:
the forward with a prebuilt block mask (the model's forward launches less the block-mask build),
the forward building the mask per call (all of them), the build alone, the backward with the
prebuilt mask. Writes --csv when given.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from einsim.problem import Problem  # noqa: E402
from einsim.simulator.gpu_cost.model import kernel_cost  # noqa: E402
from einsim.simulator.simulate import resolve_cascade, resolve_target, simulate  # noqa: E402

BUILD = "block mask"


def _tiles(config: str) -> dict[str, int]:
    """The mapping of the measured kernel's tile shape (bench_filters' `config` column)."""
    found = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", config)}
    mapping = {"kernel_style": "einsim"}
    names = {"block_m": "BLOCK_M", "block_n": "BLOCK_N", "num_warps": "num_warps", "num_stages": "num_stages"}
    forward = config.split("|")[0]
    fwd = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", forward)}
    for ours, theirs in names.items():
        if theirs in fwd:
            mapping[ours] = fwd[theirs]
    for ours, theirs in (("dkdv_block_m", "BLOCK_M"), ("dkdv_block_n", "BLOCK_N"),
                         ("dq_block_m", "BLOCK_M_DQ"), ("dq_block_n", "BLOCK_N_DQ")):
        backward = config.split("|")[-1]
        value = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", backward)}.get(theirs)
        if value is not None:
            mapping[ours] = value
    del found
    return mapping


def predict(row: dict, target) -> float | None:
    """The model's milliseconds for one measured row (None for rows it does not price)."""
    problem = Problem(batch=int(row["batch"]), q_heads=int(row["heads"]), q_len=int(row["N"]), kv_len=int(row["N"]),
                      head_dim=int(row["D"]), filter_inputs=row["inputs"])
    cascade = resolve_cascade(row["cascade"])
    mapping = _tiles(row.get("config", ""))
    kind = row["kind"]
    direction = "backward" if kind == "bwd" else "forward"
    cost = kernel_cost(cascade, problem, target, mapping, direction)
    build = [t for t in cost.launches if t.name.startswith(BUILD)]
    rest = [t for t in cost.launches if not t.name.startswith(BUILD)]
    seconds = {"fwd": sum(t.time_s for t in rest), "fwd_build_per_call": cost.time_s,
               "build_fwd_lists": sum(t.time_s for t in build), "bwd": sum(t.time_s for t in rest)}
    if kind == "build_all_lists":
        backward = kernel_cost(cascade, problem, target, mapping, "backward")
        seconds[kind] = sum(t.time_s for t in build) + sum(t.time_s for t in backward.launches if t.name.startswith(BUILD))
    return seconds[kind] * 1e3 if kind in seconds else None


def validate(path: str, out: str | None) -> int:
    target = resolve_target("h200")
    rows = [r for r in csv.DictReader(open(path)) if r.get("kind") not in ("check", "") and float(r.get("ms") or 0) > 0]
    table = []
    print(f"{'case':16s} {'kind':20s} {'measured ms':>12s} {'model ms':>10s} {'error':>8s}")
    for row in rows:
        try:
            model = predict(row, target)
        except Exception as error:  # noqa: BLE001 - a row the model refuses is reported, not fatal
            print(f"{row['case']:16s} {row['kind']:20s} model failed: {type(error).__name__}: {error}")
            continue
        if model is None:
            continue
        measured = float(row["ms"])
        error = model / measured - 1
        table.append(dict(case=row["case"], kind=row["kind"], N=row["N"], measured_ms=measured, model_ms=model,
                          error=error))
        print(f"{row['case']:16s} {row['kind']:20s} {measured:12.3f} {model:10.3f} {error:+8.1%}")
    if table:
        errors = sorted(abs(r["error"]) for r in table)
        print(f"\n{len(errors)} rows: median |error| {errors[len(errors) // 2]:.1%}, max {errors[-1]:.1%}")
    if out:
        with open(out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["case", "kind", "N", "measured_ms", "model_ms", "error"])
            writer.writeheader()
            writer.writerows(table)
    return 0


CASES = (  # (cascade, filter inputs, problem mask, symbols)
    ("fusemax", None, "full", ()), ("attention-causal", None, "causal", ()),
    ("sinks-window", None, "full", (("sinks", 4), ("window", 1024))),
    ("prefix-lm", None, "full", (("prefix", 4096),)), ("prefix-lm", None, "causal", (("prefix", 4096),)),
    ("packed-documents", None, "full", ()), ("packed-documents", "documents:4096", "full", ()),
    ("packed-documents", "documents:1024", "full", ()), ("packed-documents", "documents:256", "full", ()),
    ("block-sparse", None, "full", ()), ("block-sparse", "blocks:0.6", "full", ()),
    ("block-sparse", "blocks:0.3", "full", ()), ("block-sparse", "blocks:0.1", "full", ()),
)


def estimates_table(length: int, heads: int, out: str | None) -> int:
    """Both simulators on the masks and filters of CASES: GPU (h200, einsim's kernels and cuDNN's
    style) and spatial (fusemax-cloud)."""
    base = Problem(batch=1, q_heads=heads, q_len=length, kv_len=length, head_dim=128)
    rows = []
    print(f"{'cascade':18s} {'inputs':16s} {'mask':6s} {'h200 einsim us':>14s} {'h200 cudnn us':>13s} "
          f"{'fusemax us':>10s} {'fusemax MB':>10s} {'fusemax mJ':>10s}")
    for name, inputs, mask, symbols in CASES:
        problem = replace(base, causal=mask == "causal", filter_inputs=inputs, symbols=symbols)
        ours = simulate(name, problem, "h200", {"kernel_style": "einsim"})
        cudnn = simulate(name, problem, "h200")
        spatial = simulate(name, problem, "fusemax-cloud")
        row = dict(cascade=name, inputs=inputs or "", mask=mask, symbols=" ".join(f"{k}={v}" for k, v in symbols),
                   h200_einsim_us=ours.latency_s * 1e6, h200_cudnn_us=cudnn.latency_s * 1e6,
                   fusemax_us=spatial.latency_s * 1e6, fusemax_mb=spatial.traffic_bytes / 1e6,
                   fusemax_mj=spatial.energy_j * 1e3)
        rows.append(row)
        print(f"{name:18s} {inputs or '-':16s} {mask:6s} {row['h200_einsim_us']:14.1f} {row['h200_cudnn_us']:13.1f} "
              f"{row['fusemax_us']:10.1f} {row['fusemax_mb']:10.1f} {row['fusemax_mj']:10.2f}")
    if out:
        with open(out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", help="bench_filters.py CSV to validate against")
    parser.add_argument("--table", action="store_true", help="both simulators' estimates of masks and filters")
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    if args.measured:
        return validate(args.measured, args.csv)
    if args.table:
        return estimates_table(args.length, args.heads, args.csv)
    parser.error("give --measured CSV or --table")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
