"""Time versus sequence length of linear attention and causal softmax attention at a fixed number
of tokens per call, predicted by einsim's GPU cost model and measured on the GPU (bench_linear.py's
CSV): the figure of docs/linear-attention.md, the table of prediction errors, and the crossover
length where linear attention gets faster than softmax attention, measured and predicted.

    python benchmarks/plot_linear.py benchmarks/data/h200_linear.csv -o docs/figures/linear-vs-softmax.png

Predictions: `kernel_cost` on the H200 preset of the library cascades einsim's kernels implement —
`linear-attention-identity` (no decay) and `linear-attention-decay` priced as the chunked kernels
(simulator/gpu_cost/linear.py, the kernels' default walk), `attention-causal` as einsim's fused
kernel (style `einsim`) — for batch x N = --tokens, --heads heads, head dim --head-dim, bf16.
Crossover: where time(linear) / time(softmax) crosses 1, interpolated in log N between the two
lengths around it (measured: the lengths measured; predicted: a fine grid).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_linear_walk  # noqa: E402  (benchmarks/: reads the CSVs' rows with their configs)
from einsim.einsum_cascades import load_cascade  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.simulator.gpu_cost import kernel_cost  # noqa: E402
from einsim.targets import load_target  # noqa: E402

SERIES = {  # name: (cascade, mapping, measured backend in bench_linear.py)
    "linear": ("linear-attention-identity", None, "einsim-linear"),
    "linear-decay": ("linear-attention-decay", None, "einsim-linear-decay"),
    "softmax": ("attention-causal", {"kernel_style": "einsim"}, "einsim-softmax"),
}
PEERS = ("fla-chunk_linear_attn", "fla-chunk_simple_gla")


def problem(length: int, tokens: int, heads: int, head_dim: int) -> Problem:
    return Problem(batch=max(1, tokens // length), q_heads=heads, q_len=length, kv_len=length, head_dim=head_dim,
                   causal=True)


def predict(lengths, tokens: int, heads: int, head_dim: int, target, launch: dict | None = None) -> dict:
    """{(series, direction, N): seconds} from the cost model; `launch` ({direction: {num_warps,
    num_stages}}) fixes the linear walks' launch (else the kernels' defaults of today)."""
    found = {}
    cascades = {name: load_cascade(cascade) for name, (cascade, _, _) in SERIES.items()}
    for name, (_, mapping, _) in SERIES.items():
        for direction in ("forward", "backward"):
            given = mapping if mapping is not None or not launch else launch.get(direction)
            for length in lengths:
                cost = kernel_cost(cascades[name], problem(length, tokens, heads, head_dim), target, given, direction)
                found[(name, direction, length)] = cost.time_s
    return found


def measured_launch(paths) -> dict:
    """{direction: {num_warps, num_stages}} of the linear kernels' timed rows (fwd/bwd) in the
    CSVs, when they ran one launch shape (the last file's wins), so the curves and the predicted
    crossover are the model's for what was measured."""
    found: dict = {}
    for row in fit_linear_walk.read_rows(paths):
        if row["source_kind"] in ("fwd", "bwd"):
            found[row["direction"]] = {"num_warps": row["config"].num_warps, "num_stages": row["config"].num_stages}
    return found


def read_measured(paths) -> dict:
    """{(backend, direction, N): seconds} from bench_linear CSVs (a later file overrides)."""
    found = {}
    for path in paths:
        with open(path, newline="") as handle:
            lines = [line for line in handle if not line.startswith("#")]  # provenance header lines
            for row in csv.DictReader(lines):
                if row.get("kind") in ("fwd", "bwd") and row.get("ms"):
                    direction = "forward" if row["kind"] == "fwd" else "backward"
                    found[(row["backend"], direction, int(row["N"]))] = float(row["ms"]) * 1e-3
    return found


def crossover(times: dict[int, tuple[float, float]]) -> float | None:
    """The N where linear (first) stops being slower than softmax (second): log-N interpolation of
    log(ratio) between the measured lengths around the change; None when it never changes."""
    lengths = sorted(times)
    ratios = [math.log(times[n][0] / times[n][1]) for n in lengths]
    if ratios and ratios[0] <= 0:
        return float(lengths[0]) if len(lengths) == 1 else None
    for (n0, r0), (n1, r1) in zip(zip(lengths, ratios), zip(lengths[1:], ratios[1:])):
        if r0 > 0 >= r1:
            share = r0 / (r0 - r1)
            return math.exp(math.log(n0) + share * (math.log(n1) - math.log(n0)))
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measured", nargs="*", help="bench_linear.py CSV files")
    parser.add_argument("-o", "--out", default=None, help="figure path (PNG)")
    parser.add_argument("--target", default="h200")
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    args = parser.parse_args(argv)
    target = load_target(args.target)
    measured = read_measured(args.measured)
    grid = sorted({int(round(2 ** (k / 4))) for k in range(4 * 7, 4 * 16 + 1)})  # 128 .. 65536, 4 per octave
    measured_lengths = sorted({n for (_, _, n) in measured})
    launch = measured_launch(args.measured) if args.measured else None
    if launch:
        print(f"the linear curves at the launch measured: {launch}")
    predicted = predict(sorted(set(grid) | set(measured_lengths)), args.tokens, args.heads, args.head_dim, target,
                        launch)

    # a measured linear point is predicted at the config it ran (the CSV's `config`), not today's default
    at_config = {}
    for row in fit_linear_walk.read_rows(args.measured):
        if row["source_kind"] in ("fwd", "bwd"):
            backend = "einsim-linear" if row["decay"] == "none" else "einsim-linear-decay"
            at_config[(backend, row["direction"], row["problem"].q_len)] = fit_linear_walk.predict(row, target)
    print(f"{'direction':9s} {'series':13s} {'N':>6s} {'measured ms':>12s} {'predicted ms':>13s} {'error':>8s}")
    for direction in ("forward", "backward"):
        for name, (_, _, backend) in SERIES.items():
            for length in measured_lengths:
                got = measured.get((backend, direction, length))
                if got is None:
                    continue
                want = at_config.get((backend, direction, length), predicted[(name, direction, length)])
                print(f"{direction:9s} {name:13s} {length:6d} {got * 1e3:12.3f} {want * 1e3:13.3f} "
                      f"{(want - got) / got:+8.1%}")
    for direction in ("forward", "backward"):
        model = {n: (predicted[("linear", direction, n)], predicted[("softmax", direction, n)]) for n in grid}
        data = {n: (measured[("einsim-linear", direction, n)], measured[("einsim-softmax", direction, n)])
                for n in measured_lengths if ("einsim-linear", direction, n) in measured
                and ("einsim-softmax", direction, n) in measured}
        want, got = crossover(model), crossover(data) if data else None
        shown = (f"measured {got:.0f}" if got else "measured: not bracketed by the lengths measured")
        error = f" ({(want - got) / got:+.1%})" if want and got else ""
        print(f"crossover {direction}: linear beats causal softmax from N = {shown}; "
              f"predicted {want:.0f}{error}" if want else f"crossover {direction}: {shown}; predicted: none")

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
        colours = {"linear": "tab:blue", "linear-decay": "tab:cyan", "softmax": "tab:red"}
        for axis, direction in zip(axes, ("forward", "backward")):
            for name, (_, _, backend) in SERIES.items():
                axis.plot(grid, [predicted[(name, direction, n)] * 1e3 for n in grid], color=colours[name],
                          label=f"{name} (predicted)")
                points = [(n, measured[(backend, direction, n)] * 1e3) for n in measured_lengths
                          if (backend, direction, n) in measured]
                if points:
                    axis.plot(*zip(*points), "o", color=colours[name], label=f"{name} (measured)")
            for peer, marker in zip(PEERS, ("s", "^")):
                points = [(n, measured[(peer, direction, n)] * 1e3) for n in measured_lengths
                          if (peer, direction, n) in measured]
                if points:
                    axis.plot(*zip(*points), marker, color="grey", fillstyle="none", label=peer)
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("sequence length N (batch x N = %d tokens)" % args.tokens)
            axis.set_ylabel("time per call (ms)")
            axis.set_title(f"{direction}: H={args.heads}, D={args.head_dim}, bf16, {target.name}")
            axis.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=7)
        figure.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out, dpi=120)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
