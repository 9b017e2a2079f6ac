"""Would numba pay in einsim? The two places issue 10 names, measured on one core:

1. the float64 executor's tile loop (einsum_cascades/executor.py): time per execute, per tile
   step, and how much of it is numpy's kernels versus the Python that interprets the cascade;
2. the design-space sweep (simulator/fast.py over the spatial model): points per second as it
   is (numpy, vectorised over the points), how many elementwise array passes a point costs,
   and what a numba-fused loop of that many operations per point does against the same chain in
   numpy, compile time included.

    pip install numba                           # not an einsim dependency (this measurement is why)
    python benchmarks/bench_numba.py            # the table docs/dependencies.md quotes
    python benchmarks/bench_numba.py --csv out.csv

The executor interprets expression trees (Access/Binary nodes, np.einsum subscripts) that numba
cannot compile; the spatial model is numpy over Python objects (groups, dicts of tensors), which
numba cannot compile either. So for the sweep the experiment bounds what a rewrite of the
model as one numba kernel per point could gain, on a chain of the same length.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core

import argparse  # noqa: E402
import cProfile  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from einsim.cli.output import write_csv  # noqa: E402
from einsim.text import render_table  # noqa: E402


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- 1. the executor ------------------------------------------------------------------------

def executor_rows(repeat: int) -> list[dict]:
    from einsim.einsum_cascades import load_cascade
    from einsim.einsum_cascades.executor import execute

    rows = []
    for name, n in (("fusemax", 256), ("fusemax", 1024), ("attention-3pass", 1024)):
        cascade = load_cascade(name)
        rng = np.random.default_rng(0)
        heads, dim, block = 2, 64, 64
        inputs = {"Q": rng.standard_normal((1, heads, dim, n)), "K": rng.standard_normal((1, heads, dim, n)),
                  "V": rng.standard_normal((1, heads, dim, n))}
        sizes = {"block_m": block} if "block_m" in cascade.symbols else {}
        run = lambda: execute(cascade, inputs, sizes)  # noqa: E731
        run()
        seconds = median_time(run, repeat)
        profile = cProfile.Profile()
        profile.enable()
        run()
        profile.disable()
        stats = pstats.Stats(profile).stats
        total = sum(entry[2] for entry in stats.values())  # tottime of every function
        # einsim's own frames: the interpreter numba would have to replace (an upper bound: the
        # numpy indexing and arithmetic they run inline is counted with them)
        ours = sum(entry[2] for key, entry in stats.items() if "/einsum_cascades/" in key[0])
        steps = -(-n // block) if "M1" in cascade.ranks else 1
        rows.append({"part": "executor", "case": f"{name} B1 H2 N{n} E64 block {block}", "points": steps,
                     "seconds": seconds, "per_point_s": seconds / steps,
                     "note": f"at most {ours / total:.0%} in einsim's interpreter frames, the rest in numpy "
                             f"(einsum, reductions): <= {total / max(total - ours, 1e-12):.2f}x if that part cost nothing"})
    return rows


# -- 2. the design-space sweep ----------------------------------------------------------------

def sweep_points(capacities: int) -> int:
    from einsim.simulator.fast import sweep_mappings
    from einsim.simulator.models import load_model

    points = sweep_mappings(
        "fusemax", load_model("BERT").problem(65536), "fusemax-cloud", key_tiles=[64, 128, 256],
        query_tiles=[32, 64, 128, 256], query_blocks=2 ** np.arange(5, 17),
        capacities=2 ** np.linspace(18, 28, capacities), dram_bandwidths=[100e9, 200e9, 400e9, 800e9],
        spills=("store", "recompute"))
    return len(points["latency_s"])


LANES = 8  # independent sub-chains per point: a formula is a graph, not one long chain


def numpy_chain(x: np.ndarray, y: np.ndarray, length: int) -> np.ndarray:
    """`length` elementwise operations per point, the spatial model's mix (mul, add, div, max,
    where) in LANES independent sub-chains summed at the end, each op a full numpy pass."""
    lanes = [x + lane for lane in range(LANES)]
    for i in range(length // (5 * LANES)):
        for lane in range(LANES):
            v = lanes[lane] * 1.0001 + y
            v = v / (1.0 + 1e-9 * i)
            v = np.maximum(v, y)
            lanes[lane] = np.where(v > 1e300, y, v)
    return sum(lanes)


def numba_chain_factory(length: int):
    """The same operations fused into one loop over the points (what a numba kernel of the
    model would be), compiled on first call."""
    import numba

    @numba.njit
    def chain(x, y):
        out = np.empty_like(x)
        lanes = np.empty(LANES)
        for j in range(x.shape[0]):
            w = y[j]
            for lane in range(LANES):
                lanes[lane] = x[j] + lane
            for i in range(length // (5 * LANES)):
                for lane in range(LANES):
                    v = lanes[lane] * 1.0001 + w
                    v = v / (1.0 + 1e-9 * i)
                    v = max(v, w)
                    lanes[lane] = w if v > 1e300 else v
            out[j] = lanes.sum()
        return out

    return chain


def sweep_rows(repeat: int) -> list[dict]:
    rows = []
    sweep_points(4)  # warm the caches (cascade parsed, pass analysis)
    few = sweep_points(1)
    few_s = median_time(lambda: sweep_points(1), repeat)
    points = sweep_points(128)
    seconds = median_time(lambda: sweep_points(128), repeat)
    per_point = (seconds - few_s) / (points - few)
    rows.append({"part": "sweep", "case": "simulator/fast.py sweep_mappings, fusemax on fusemax-cloud (numpy)",
                 "points": points, "seconds": seconds, "per_point_s": seconds / points,
                 "note": f"{points / seconds:.3g} points/s; {few_s * 1e3:.0f} ms fixed per sweep "
                         f"(6 Design.evaluate calls), then {per_point * 1e9:.0f} ns per point"})
    length, n = 200, 1_000_000  # about 200 array operations per evaluate call (docs/performance.md)
    x, y = np.linspace(1.0, 2.0, n), np.linspace(0.5, 1.5, n)
    numpy_s = median_time(lambda: numpy_chain(x, y, length), repeat)
    start = time.perf_counter()
    chain = numba_chain_factory(length)
    chain(x[:10], y[:10])
    compile_s = time.perf_counter() - start
    numba_s = median_time(lambda: chain(x, y), repeat)
    assert np.allclose(chain(x, y), numpy_chain(x, y, length))
    rows.append({"part": "sweep", "case": f"{length} elementwise ops per point in {LANES} lanes, numpy", "points": n,
                 "seconds": numpy_s, "per_point_s": numpy_s / n, "note": f"{n / numpy_s:.3g} points/s"})
    rows.append({"part": "sweep", "case": "the same ops fused by numba.njit", "points": n,
                 "seconds": numba_s, "per_point_s": numba_s / n,
                 "note": f"{n / numba_s:.3g} points/s, {numpy_s / numba_s:.1f}x numpy; compiling took {compile_s:.2f} s"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    args = parser.parse_args(argv)
    try:
        import numba
    except ImportError:
        print("bench_numba: needs numba, which einsim does not depend on: pip install numba", file=sys.stderr)
        return 2

    rows = executor_rows(args.repeat) + sweep_rows(args.repeat)
    print(f"one core of {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}; medians of {args.repeat}")
    print(render_table(["part", "case", "points", "seconds", "per point", "note"],
                       [[r["part"], r["case"], r["points"], f"{r['seconds']:.4g}", f"{r['per_point_s']:.3g} s",
                         r["note"]] for r in rows]))
    if args.csv:
        write_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
