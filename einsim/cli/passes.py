"""`einsim passes NAME`: how many passes over a rank a cascade needs, the pass of each Einsum, and
what stays live between passes (and whether it grows with the rank)."""

from __future__ import annotations

import argparse

from einsim.cli.output import add_wide_argument, print_json
from einsim.text import render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "passes", help="passes over a rank (default M) and the intermediates live between passes",
        description="The lower bound on passes over a rank (FuseMax, section III), derived from the "
        "cascade's dependency graph.")
    parser.add_argument("name", help="library name (einsim cascades list) or path to a cascade YAML")
    parser.add_argument("--rank", default="M", help="the rank traversed (default M, the K/V sequence)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from einsim.einsum_cascades import analyze_passes, load_cascade

    report = analyze_passes(load_cascade(args.name), args.rank)
    if args.json:
        print_json(report.to_json())
        return 0
    print(f"{report.cascade}: {report.passes} pass{'es' if report.passes != 1 else ''} over {report.rank}")
    for part, passes in report.passes_within.items():
        print(f"  {passes} pass{'es' if passes != 1 else ''} within each {part} "
              f"(einsim passes {report.cascade} --rank {part})")
    print()
    rows = [[p, name, "yes" if report.iterates_rank[name] else "no"] for name, p in report.einsum_pass.items()]
    print(render_table(["pass", "einsum", f"iterates {report.rank}"], rows))
    print()
    if not report.live_across_passes:
        print("live across passes: nothing" + (f" (one pass over {report.rank}: only per-tile state)" if report.passes == 1
                                               else " (no later pass reads what an earlier one wrote)"))
        return 0
    rows = [
        [t.tensor, t.elements, "yes" if t.grows_with_rank else "no", t.produced_in or "input",
         ", ".join(map(str, t.consumed_in))]
        for t in report.live_across_passes
    ]
    print("live across passes (kept on chip, or written and read again):")
    print(render_table(["tensor", "elements", f"grows with {report.rank}", "written in", "read in"], rows))
    return 0
