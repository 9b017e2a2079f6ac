"""How fast the analytical simulator is, on one CPU core: the FuseMax paper's whole grid (4 models x
6 lengths x 5 designs, attention through `simulate`, goal < 1 s) and a sweep of over 1e5 mapping
points of one design (simulator/fast.py, goal >= 1e5 points/s).

    python benchmarks/bench_simulator.py              # prints the table docs/performance.md shows
    python benchmarks/bench_simulator.py --csv out.csv

Cold = the first pass in a fresh process (cascades parsed, pass analyses run); warm = a second
pass. Each figure is the median of --repeat runs (the cold one is measured once).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as the goal says

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from einsim.cli.output import write_csv  # noqa: E402
from einsim.text import render_table  # noqa: E402


def paper_grid() -> int:
    """Attention for every design, model and length of the paper's evaluation."""
    from einsim.simulator.models import PAPER_SEQ_LENS, load_model
    from einsim.simulator.paper_reference import MODELS
    from einsim.simulator.paper_runs import DESIGN_SPECS, design_spec
    from einsim.simulator.simulate import simulate

    count = 0
    for design in DESIGN_SPECS:
        for model in MODELS:
            preset = load_model(model)
            for seq_len in PAPER_SEQ_LENS:
                cascade, target, mapping = design_spec(design, model, seq_len)
                simulate(cascade, preset.problem(seq_len), target, mapping)
                count += 1
    return count


def mapping_sweep(cascade: str, target: str, key_tiles) -> int:
    """Key tiles x query tiles x query blocks x buffer sizes x DRAM bandwidths x spill policies."""
    from einsim.simulator.fast import sweep_mappings
    from einsim.simulator.models import load_model

    points = sweep_mappings(
        cascade, load_model("BERT").problem(65536), target, key_tiles=key_tiles,
        query_tiles=[32, 64, 128, 256], query_blocks=2 ** np.arange(5, 17), capacities=2 ** np.linspace(18, 28, 128),
        dram_bandwidths=[100e9, 200e9, 400e9, 800e9], spills=("store", "recompute"))
    return len(points["latency_s"])


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    args = parser.parse_args(argv)

    rows = []
    start = time.perf_counter()
    count = paper_grid()
    cold = time.perf_counter() - start
    rows.append({"benchmark": "paper grid, cold (first run in the process)", "points": count, "seconds": cold,
                 "points_per_s": count / cold, "goal": "< 1 s"})
    count, warm = timed(paper_grid, args.repeat)
    rows.append({"benchmark": "paper grid, warm", "points": count, "seconds": warm, "points_per_s": count / warm, "goal": "< 1 s"})
    for cascade, target, key_tiles in (("fusemax", "fusemax-cloud", [64, 128, 256]), ("attention-3pass", "flat-cloud", [None])):
        mapping_sweep(cascade, target, key_tiles)  # warm the caches
        count, seconds = timed(lambda: mapping_sweep(cascade, target, key_tiles), args.repeat)
        rows.append({"benchmark": f"mapping sweep, {cascade} on {target}", "points": count, "seconds": seconds,
                     "points_per_s": count / seconds, "goal": ">= 1e5 points/s"})

    print(f"one core of {platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}")
    print(render_table(["benchmark", "points", "seconds", "points/s", "goal"],
                       [[r["benchmark"], r["points"], f"{r['seconds']:.3f}", f"{r['points_per_s']:.3g}", r["goal"]] for r in rows]))
    if args.csv:
        write_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
