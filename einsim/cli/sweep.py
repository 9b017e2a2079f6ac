"""`einsim sweep`: a grid of targets x cascades x models x sequence lengths through the simulator,
to CSV, with a progress bar."""

from __future__ import annotations

import argparse
import sys

from einsim.cli.output import write_csv

DEFAULT_TARGETS = "fusemax-cloud,flat-cloud,unfused-cloud"
DEFAULT_CASCADES = "fusemax,attention-3pass"
DEFAULT_MODELS = "BERT,TrXL,T5,XLM"
DEFAULT_SEQ_LENS = "1k,4k,16k,64k,256k,1m"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sweep", help="simulate a grid of targets x cascades x models x lengths to CSV",
                                   description=__doc__)
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help=f"comma-separated presets or YAML paths (default {DEFAULT_TARGETS})")
    parser.add_argument("--cascades", default=DEFAULT_CASCADES, help=f"comma-separated cascades (default {DEFAULT_CASCADES})")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated model presets (default {DEFAULT_MODELS})")
    parser.add_argument("--seq-lens", default=DEFAULT_SEQ_LENS, help=f"comma-separated lengths, 4096 or 4k (default {DEFAULT_SEQ_LENS})")
    parser.add_argument("--mode", choices=("prefill", "decode"), default="prefill",
                        help="prefill: each sequence's N queries over its N keys; decode: one query per "
                        "sequence over a cache of N keys (default prefill)")
    parser.add_argument("--mapping", help="one mapping YAML applied to every point (default: each design's own)")
    parser.add_argument("--out", help="CSV file to write (default: print CSV to stdout)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from einsim.shapes import parse_lengths
    from einsim.simulator.sweep import grid

    def names(text: str) -> list[str]:
        return [item.strip() for item in text.split(",") if item.strip()]

    lengths = parse_lengths(args.seq_lens)
    rows = grid(names(args.targets), names(args.cascades), names(args.models), lengths, mode=args.mode,
                mapping=args.mapping, progress=not args.no_progress and sys.stderr.isatty())
    if args.out:
        write_csv(rows, args.out)
        failed = sum(1 for r in rows if "error" in r)
        print(f"wrote {len(rows)} rows to {args.out}" + (f" ({failed} could not be simulated: see their error column)" if failed else ""))
    else:
        write_csv(rows, sys.stdout)
    return 0
