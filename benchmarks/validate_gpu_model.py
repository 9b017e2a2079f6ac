"""Compare the GPU model's predicted times with measured H100 times (the peers anchors, and any
other CSV of the same columns given on the command line); print a markdown table and a summary.

    python benchmarks/validate_gpu_model.py [../shared/anchors/h100-peers.csv] [--csv out.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from einsim.cli.output import write_csv
from einsim.simulator.gpu_validation import compare, summary

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "anchors" / "h100-peers.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv_path", nargs="?", default=str(DEFAULT))
    parser.add_argument("--target", default="h100-sxm")
    parser.add_argument("--csv", help="write the comparison here")
    args = parser.parse_args()
    rows = compare(args.csv_path, args.target)
    print("| kind | N | D | causal | backend (style) | measured ms | predicted ms | error | model bound |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r.kind != "prefill", r.workload.head_dim, r.workload.causal, r.workload.kv_len, r.backend)):
        w = r.workload
        print(f"| {r.kind} | {w.kv_len} | {w.head_dim} | {'yes' if w.causal else 'no'} | {r.backend} ({r.style}) | "
              f"{r.measured_ms:.3f} | {r.predicted_ms:.3f} | {100 * r.error:+.1f} % | {r.bound} |")
    print()
    print("| kind | backend | rows | mean abs error | max abs error | bias |")
    print("|---|---|---|---|---|---|")
    for (kind, backend), s in summary(rows).items():
        print(f"| {kind} | {backend} | {s['rows']} | {100 * s['mean_abs']:.1f} % | {100 * s['max_abs']:.1f} % | {100 * s['bias']:+.1f} % |")
    if args.csv:
        write_csv([{"kind": r.kind, "backend": r.backend, "style": r.style, "N": r.workload.kv_len, "D": r.workload.head_dim,
                    "causal": int(r.workload.causal), "measured_ms": r.measured_ms, "predicted_ms": r.predicted_ms,
                    "error": r.error, "bound": r.bound} for r in rows], args.csv)


if __name__ == "__main__":
    main()
