"""Regenerates every figure of docs/plots.md: `python -m einsim.plots.gallery docs/figures`.

Each figure is drawn from the same Python API the `einsim roofline` / `einsim plot` commands use,
with the inputs docs/plots.md names beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from einsim.simulator.models import load_model
from einsim.plots.pass_graph_data import pass_graph
from einsim.plots.roofline_data import roofline_for
from einsim.plots.speedup_data import PAPER_DESIGNS, speedup_data
from einsim.plots.traffic_data import traffic_steps
from einsim.plots.figure import save_figure
from einsim.plots.layout import text_problems
from einsim.plots.style import STYLES, Style
from einsim.plots.measured import load_measured
from einsim.plots.passes_graph import plot_pass_graph
from einsim.plots.roofline import plot_roofline
from einsim.plots.speedup import plot_speedup
from einsim.plots.traffic_buffer import plot_traffic_vs_buffer

ROOT = Path(__file__).resolve().parents[2]
# H100 peers measured in this workplace, shipped with their provenance (benchmarks/data/README.md).
ANCHORS = ROOT / "benchmarks" / "data" / "h100-peers.csv"


def figures(measured: list[Path], style: Style | str | None = None) -> dict[str, object]:
    """File name -> a function drawing it (in `style`: screen by default, or paper)."""
    bert_4k = load_model("BERT").problem(4096)
    runs = load_measured([p for p in measured if p.is_file()])
    return {
        "roofline-h100.png": lambda: plot_roofline(roofline_for(
            ["h100-sxm"], ["fusemax", "attention-3pass"], bert_4k, measured=runs), style=style),
        "roofline-accelerators.png": lambda: plot_roofline(roofline_for(
            ["flat-cloud", "fusemax-cloud"], ["attention-3pass", "fusemax"], bert_4k), style=style),
        # the resident model (rows of QK kept or spilled), so the passes show as steps
        "traffic-vs-buffer.png": lambda: plot_traffic_vs_buffer(traffic_steps(
            ["attention-3pass", "attention-2pass", "fusemax"], load_model("BERT").problem(16384), "flat-cloud",
            mapping={"staging": "resident"}), style=style),
        "speedup.png": lambda: plot_speedup(speedup_data(
            ["BERT", "TrXL", "T5", "XLM"], [1024, 4096, 16384, 65536, 262144, 1048576], PAPER_DESIGNS), style=style),
        "passes-attention-3pass.png": lambda: plot_pass_graph(pass_graph("attention-3pass"), style=style),
        "passes-attention-2pass.png": lambda: plot_pass_graph(pass_graph("attention-2pass"), style=style),
        "passes-fusemax.png": lambda: plot_pass_graph(pass_graph("fusemax"), style=style),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m einsim.plots.gallery", description=__doc__)
    parser.add_argument("folder", type=Path, help="where to write the figures (docs/figures)")
    parser.add_argument("--measured", type=Path, action="append",
                        help=f"benchmark CSV(s) for the H100 roofline (default {ANCHORS})")
    parser.add_argument("--only", action="append", help="just these file names")
    parser.add_argument("--style", choices=tuple(STYLES), default="screen",
                        help="screen (default: the docs' figures) or paper (two-column page sizes)")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    for name, draw in figures(args.measured or [ANCHORS], args.style).items():
        if args.only and name not in args.only:
            continue
        figure = draw()
        for problem in text_problems(figure):  # the figures' test fails on these too
            print(f"warning: {name}: {problem}", file=sys.stderr)
        path = save_figure(figure, args.folder / name)
        print(f"{path} ({path.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
