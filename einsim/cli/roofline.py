"""`einsim roofline`: one roofline per target with each cascade at its predicted point, measured
kernels from a benchmark CSV or a tuning database beside them; the figure, a table, CSV or JSON."""

from __future__ import annotations

import argparse
import sys

from einsim.cli.output import add_style_argument, add_wide_argument, print_json, write_csv
from einsim.text import render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    from einsim.cli.problem_args import add_problem_arguments

    parser = subparsers.add_parser(
        "roofline", help="roofline of cascades on targets, with measured kernels (PNG/SVG/PDF, CSV, JSON)",
        description="Place each cascade on each target's roofline: compute roofs (matmul, exp, vector / 1D "
        "array), memory roofs (off-chip, on-chip), the cascade at its operational intensity and predicted "
        "performance, measured kernels beside it. The y axis counts attention FLOPs (2·(E+F) per visible "
        "query-key pair); exp and vector roofs are converted into those FLOPs: docs/plots.md.")
    add_target_cascade_arguments(parser)
    add_problem_arguments(parser)
    parser.add_argument("--mapping", help="mapping YAML for the simulator (default: the design's own)")
    parser.add_argument("--peaks", choices=("measured", "datasheet"), default="measured",
                        help="roof heights: measured ceilings where the target has them (default) or datasheet")
    parser.add_argument("--per-einsum", action="store_true", help="also place each Einsum (its own work and traffic)")
    parser.add_argument("--measured", action="append", default=[], metavar="CSV",
                        help="benchmark CSV (kind, backend, N, D, causal, ms, tflops, tbps); repeatable")
    parser.add_argument("--tuning-db", action="append", default=[], metavar="URL",
                        help="Optuna storage of einsim autotune (sqlite:///file.db or a path); repeatable")
    parser.add_argument("--match", choices=("shape", "lengths", "all"), default="shape",
                        help="measured runs shown: the workload's exact shape (default), any sequence length "
                        "with its head dim and mask, or all")
    add_output_arguments(parser)
    parser.set_defaults(handler=run)


def add_target_cascade_arguments(parser: argparse.ArgumentParser, cascade_default: tuple[str, ...] = ("fusemax",)) -> None:
    parser.add_argument("--target", action="append", required=True, metavar="T",
                        help="target preset or YAML path (einsim targets list); repeatable")
    parser.add_argument("--cascade", action="append", metavar="C",
                        help=f"cascade name or YAML path (einsim cascades list); repeatable (default {' '.join(cascade_default)})")
    parser.set_defaults(cascade_default=cascade_default)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FIG", help="write the figure: .png, .svg or .pdf (vector)")
    add_style_argument(parser)
    parser.add_argument("--csv", metavar="FILE", help="write the data behind the figure as CSV ('-': stdout)")
    parser.add_argument("--json", action="store_true", help="print the data behind the figure as JSON")
    add_wide_argument(parser)


def emit(args: argparse.Namespace, data: object, rows: list[dict], figure_of, table) -> int:
    """Shared tail of every plot command: figure file, CSV, JSON, else a human table."""
    from einsim.plots.figure import save_figure

    if args.output:
        path = save_figure(figure_of(), args.output)
        print(f"wrote {path}", file=sys.stderr)
    if args.csv:
        write_csv(rows, sys.stdout if args.csv == "-" else args.csv)
        if args.csv != "-":
            print(f"wrote {args.csv}", file=sys.stderr)
    if args.json:
        print_json(data)
    elif not args.output and not args.csv:
        table()
    return 0


def run(args: argparse.Namespace) -> int:
    from einsim.plots.roofline_data import roofline_for
    from einsim.plots.measured import load_measured
    from einsim.plots.roofline import plot_roofline
    from einsim.cli.problem_args import problem_from_args

    problem = problem_from_args(args)
    measured = load_measured(args.measured, args.tuning_db)
    panels = roofline_for(args.target, args.cascade or list(args.cascade_default), problem, mapping=args.mapping,
                          source=args.peaks, per_einsum=args.per_einsum, measured=measured, measured_match=args.match)
    rows = [row for panel in panels for row in panel.rows()]

    def table() -> None:
        for panel in panels:
            print(f"{panel.target} ({panel.dtype}), {problem.name}: attention FLOPs "
                  f"{panel.points[0].flops:.4g}" if panel.points else panel.target)
            print(render_table(
                ["roof", "peak", "unit", "FLOP/op", "TFLOP/s", "ridge FLOP/B", "source"],
                [[r.label.split(":")[0] + (f" [{', '.join(r.cascades)}]" if r.cascades else ""), r.peak, r.peak_unit,
                  r.flop_per_op if r.flop_per_op is not None else "", (r.flops_per_s or 0) / 1e12 if r.flops_per_s else "",
                  r.ridge_intensity if r.ridge_intensity is not None else "", r.source] for r in panel.roofs]))
            print()
            print(render_table(
                ["point", "origin", "FLOP/B", "TFLOP/s", "bound", "lowest roof at its intensity", "roof TFLOP/s"],
                [[p.label, p.origin, p.intensity if p.intensity is not None else "inf", p.flops_per_s / 1e12,
                  p.bound_role or "-", (p.limiting_roof or "").split(":")[0],
                  (p.attainable_flops_per_s or 0) / 1e12] for p in panel.points]))
            for note in panel.notes:
                print(f"note: {note}")
            print()

    return emit(args, panels, rows, lambda: plot_roofline(panels, style=args.style), table)
