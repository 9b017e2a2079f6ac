"""`einsim simulate`: one cascade on one target for one workload — latency, off-chip traffic, buffer,
energy, utilisation and the per-Einsum breakdown; `--buffer-sweep` for the traffic-versus-buffer
curve of a spatial design. With no arguments: fusemax on h100-sxm for llama3-8b at 4096 tokens."""

from __future__ import annotations

import argparse
import math
import sys

from einsim.cli.output import print_json, write_csv
from einsim.text import format_time, render_table
from einsim.units import format_bytes

DEFAULT_CASCADE = "fusemax"
DEFAULT_TARGET = "h100-sxm"
DEFAULT_MODEL = "llama3-8b"
DEFAULT_SEQ_LEN = 4096


def register(subparsers: argparse._SubParsersAction) -> None:
    from einsim.cli.problem_args import add_problem_arguments

    parser = subparsers.add_parser(
        "simulate", help="estimate a cascade on a hardware target (latency, traffic, buffer, energy)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cascade", default=DEFAULT_CASCADE, help=f"library cascade or YAML path (default {DEFAULT_CASCADE})")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"target preset or YAML path (default {DEFAULT_TARGET})")
    parser.add_argument("--mapping", help="mapping YAML (tiles, query block, binding, schedule; docs/simulator.md §2)")
    add_problem_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the Estimate as JSON")
    parser.add_argument("--buffer-sweep", action="store_true", help="traffic, latency and energy versus global-buffer size (spatial targets)")
    parser.add_argument("--csv", help="with --buffer-sweep: also write the curve to this CSV file")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from einsim.cli.problem_args import problem_from_args
    from einsim.simulator.simulate import simulate

    if args.csv and not args.buffer_sweep:
        from einsim.errors import ConfigError

        raise ConfigError(f"--csv {args.csv}: writes the --buffer-sweep curve; add --buffer-sweep, "
                          "or use --json (or einsim sweep --out FILE for estimates as CSV rows)")
    problem = problem_from_args(args, default_model=DEFAULT_MODEL, default_seq_len=DEFAULT_SEQ_LEN)
    if args.buffer_sweep:
        return _buffer_sweep(args, problem)
    estimate = simulate(args.cascade, problem, args.target, args.mapping, strict=True)
    if args.json:
        print_json(estimate.to_dict())
    else:
        print(estimate)
    return 0


def _buffer_sweep(args: argparse.Namespace, problem) -> int:
    from einsim.simulator.sweep import buffer_sweep

    rows = buffer_sweep(args.cascade, problem, args.target, args.mapping)
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        print_json(rows)
        return 0
    print(f"{args.cascade} on {args.target} — {problem.name}: off-chip traffic versus global buffer "
          "(mapping re-chosen at each size; x = times the compulsory traffic)")
    table = []
    for r in rows:
        if math.isnan(r["traffic_bytes"]):
            table.append([_bytes(r["buffer_bytes"]), "—", "—", "—", "does not fit", ""])
            continue
        state = "fits" if r["fits"] else f"spills {r['spill_fraction']:.0%} ({r['spill']})"
        table.append([_bytes(r["buffer_bytes"]), _bytes(r["traffic_bytes"]), f"{r['traffic_over_compulsory']:.3g}x",
                      format_time(r["latency_s"]), state, r["query_block"]])
    print(render_table(["buffer", "traffic", "x compulsory", "latency", "live state", "query block"], table))
    if args.csv:
        print(f"\nwrote {args.csv}", file=sys.stderr)
    return 0


def _bytes(value: float) -> str:
    return "—" if value is None or math.isnan(value) else format_bytes(value)
