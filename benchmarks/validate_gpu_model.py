"""Compare the GPU model's predicted times with measured H100 times (the peers anchors, and any
other CSV of the same columns given on the command line); print a markdown table and a summary.

    python benchmarks/validate_gpu_model.py [../shared/anchors/h100-peers.csv] [--csv out.csv]
    python benchmarks/validate_gpu_model.py --ours [benchmarks/data/h100_ours_multipass_decode.csv]

--ours compares einsim's own multi-pass and decode kernels (times measured in docs/performance.md)
with the model under the kernels' mappings (Triton style, their default tiles).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from einsim.cli.output import write_csv
from einsim.simulator.gpu_validation import compare, summary

OURS = Path(__file__).resolve().parent / "data" / "h100_ours_multipass_decode.csv"
DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "anchors" / "h100-peers.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv_path", nargs="?", default=str(DEFAULT))
    parser.add_argument("--target", default="h100-sxm")
    parser.add_argument("--csv", help="write the comparison here")
    parser.add_argument("--ours", nargs="?", const=str(OURS), help="compare our multi-pass/decode kernels instead")
    args = parser.parse_args()
    if args.ours:
        compare_ours(args.ours, args.target)
        return
    rows = compare(args.csv_path, args.target)
    print("| kind | N | D | causal | backend (style) | measured ms | predicted ms | error | model bound |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r.kind != "prefill", r.problem.head_dim, r.problem.causal, r.problem.kv_len, r.backend)):
        w = r.problem
        print(f"| {r.kind} | {w.kv_len} | {w.head_dim} | {'yes' if w.causal else 'no'} | {r.backend} ({r.style}) | "
              f"{r.measured_ms:.3f} | {r.predicted_ms:.3f} | {100 * r.error:+.1f} % | {r.bound} |")
    print()
    print("| kind | backend | rows | mean abs error | max abs error | bias |")
    print("|---|---|---|---|---|---|")
    for (kind, backend), s in summary(rows).items():
        print(f"| {kind} | {backend} | {s['rows']} | {100 * s['mean_abs']:.1f} % | {100 * s['max_abs']:.1f} % | {100 * s['bias']:+.1f} % |")
    if args.csv:
        write_csv([{"kind": r.kind, "backend": r.backend, "style": r.style, "N": r.problem.kv_len, "D": r.problem.head_dim,
                    "causal": int(r.problem.causal), "measured_ms": r.measured_ms, "predicted_ms": r.predicted_ms,
                    "error": r.error, "bound": r.bound} for r in rows], args.csv)


def ours_rows(path: str | Path, target: str = "h100-sxm") -> list[dict]:
    """Predicted vs measured time of each row of our kernels' CSV (see the file's header)."""
    import csv

    from einsim.simulator.gpu import simulate_gpu
    from einsim.problem import Problem

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    out = []
    for row in rows:
        n = {k: int(row[k]) for k in ("batch", "heads", "kv_heads", "q_len", "kv_len", "head_dim", "causal")}
        problem = Problem(batch=n["batch"], q_heads=n["heads"], kv_heads=n["kv_heads"], q_len=n["q_len"],
                            kv_len=n["kv_len"], head_dim=n["head_dim"], causal=bool(n["causal"]))
        if row["kernel"] == "decode":  # kernels/decode default: BLOCK_N 128, 3 stages, automatic splits
            cascade, mapping = "fusemax", {"block_n": 128, "num_stages": 3, "kernel_style": "triton"}
        else:  # kernels/multipass default for D = 128
            cascade = row["kernel"]
            mapping = {"block_m": 128, "block_n": 64, "num_stages": 3, "kernel_style": "triton", "multipass": row["mapping"]}
        est = simulate_gpu(cascade, problem, target, mapping)
        measured = float(row["measured_ms"])
        predicted = est.latency_s * 1e3
        out.append({**row, "predicted_ms": predicted, "error": predicted / measured - 1, "bound": est.bound,
                    "predicted_mb": est.traffic_bytes / 1e6})
    return out


def compare_ours(path: str | Path, target: str) -> None:
    rows = ours_rows(path, target)
    print("| kernel | mapping | B x H (KV) | N | causal | measured ms | predicted ms | error | model bound | model MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kernel']} | {r['mapping']} | {r['batch']} x {r['heads']} ({r['kv_heads']}) | {r['kv_len']} | "
              f"{'yes' if r['causal'] == '1' else 'no'} | {float(r['measured_ms']):.3f} | {r['predicted_ms']:.3f} | "
              f"{100 * r['error']:+.1f} % | {r['bound']} | {r['predicted_mb']:.1f} |")
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["mapping"]), []).append(r["error"])
    print()
    print("| kernel | mapping | rows | mean abs error | max abs error | bias |")
    print("|---|---|---|---|---|---|")
    for (kernel, mapping), errors in groups.items():
        print(f"| {kernel} | {mapping} | {len(errors)} | {100 * sum(map(abs, errors)) / len(errors):.1f} % | "
              f"{100 * max(map(abs, errors)):.1f} % | {100 * sum(errors) / len(errors):+.1f} % |")


if __name__ == "__main__":
    main()
