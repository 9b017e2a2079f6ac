"""`einsim cascades list|show|graph|reassociate`: the library of cascades, one cascade's Einsums
with the pass each runs in, its dependency graph drawn to a PNG, and its 1-pass form derived by the
FuseMax reassociation."""

from __future__ import annotations

import argparse

from einsim.cli.output import print_json, safe_file_stem
from einsim.text import render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cascades", help="list, show and draw Einsum cascades")
    actions = parser.add_subparsers(dest="cascades_action", metavar="ACTION")
    listing = actions.add_parser("list", help="the cascades shipped in the library, with their passes")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="a cascade's ranks, inputs and Einsums with their pass numbers")
    show.add_argument("name", help="library name (einsim cascades list) or path to a cascade YAML")
    show.add_argument("--rank", default=None, help="rank whose passes are numbered (default M)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)
    graph = actions.add_parser("graph", help="draw the dependency graph, Einsums coloured by pass")
    graph.add_argument("name", help="library name or path to a cascade YAML")
    graph.add_argument("-o", "--output", default=None, help="PNG to write (default NAME.png)")
    graph.add_argument("--rank", default=None, help="rank whose passes colour the graph (default M)")
    graph.set_defaults(handler=_graph)
    rewrite = actions.add_parser("reassociate", help="derive the 1-pass running-state form of a plain softmax cascade "
                                                     "(the FuseMax reassociation) and print it as YAML")
    rewrite.add_argument("name", help="library name or path to a plain softmax-attention cascade YAML")
    rewrite.add_argument("-o", "--output", default=None, help="write the YAML to this file instead of printing it")
    rewrite.add_argument("--tile-symbol", default="block_m", help="size symbol of the key tile (default block_m)")
    rewrite.set_defaults(handler=_reassociate)
    parser.set_defaults(handler=_list, json=False)


def default_rank(cascade, rank: str | None) -> str | None:
    """M, the K/V sequence rank, when the cascade has it; otherwise no pass numbering."""
    if rank is not None:
        return rank
    return "M" if "M" in cascade.ranks else None


def _list(args: argparse.Namespace) -> int:
    from einsim.einsum_cascades import analyze_passes, library_names, load_cascade

    rows = []
    for name in library_names():
        cascade = load_cascade(name)
        report = analyze_passes(cascade) if "M" in cascade.ranks else None
        rows.append({
            "name": name,
            "passes_over_M": report.passes if report else None,
            "passes_within": report.passes_within if report else {},
            "einsums": len(cascade.einsums),
            "represents": list(cascade.represents),
            "description": cascade.description,
        })
    if args.json:
        print_json(rows)
        return 0
    table = []
    for row in rows:
        passes = "-" if row["passes_over_M"] is None else str(row["passes_over_M"])
        if row["passes_within"]:
            passes += " (" + ", ".join(f"{v} per {k}" for k, v in row["passes_within"].items()) + ")"
        table.append([row["name"], passes, row["einsums"], ", ".join(row["represents"])])
    print(render_table(["cascade", "passes over M", "einsums", "represents"], table))
    return 0


def _show(args: argparse.Namespace) -> int:
    from einsim.einsum_cascades import analyze_passes, load_cascade

    cascade = load_cascade(args.name)
    rank = default_rank(cascade, args.rank)
    report = analyze_passes(cascade, rank) if rank else None
    if args.json:
        data = {
            "name": cascade.name, "description": cascade.description, "represents": list(cascade.represents),
            "ranks": dict(cascade.ranks), "partitions": {k: list(v) for k, v in cascade.partitions.items()},
            "symbols": dict(cascade.symbols), "inputs": {k: list(v) for k, v in cascade.inputs.items()},
            "filters": [f.text for f in cascade.filters], "outputs": list(cascade.outputs),
            "einsums": [
                {"output": e.output, "text": e.text, "pass": report.einsum_pass[e.output] if report else None,
                 "reduce": e.reduce_op, "reduced_ranks": list(e.reduced_ranks), "map_ops": list(e.map_ops),
                 "filters": [f.text for f in e.filters], "iterative_rank": e.iterative_rank}
                for e in cascade.einsums
            ],
            "passes": report.to_json() if report else None,
        }
        print_json(data)
        return 0
    print(f"{cascade.name}: {cascade.description}")
    if cascade.represents:
        print(f"represents: {', '.join(cascade.represents)}")
    print("ranks: " + ", ".join(f"{r}={v}" for r, v in cascade.ranks.items()))
    if cascade.partitions:
        print("partitions: " + ", ".join(f"{p} -> {' x '.join(parts)}" for p, parts in cascade.partitions.items()))
    if cascade.symbols:
        print("defaults: " + ", ".join(f"{s}={v}" for s, v in cascade.symbols.items()))
    print("inputs: " + ", ".join(f"{t}[{','.join(r)}]" for t, r in cascade.inputs.items()))
    if cascade.filters:
        print("filters: " + "; ".join(f.text for f in cascade.filters))
    init = {e.output: e.init for e in cascade.einsums if e.iterative_rank}
    if init:
        print("init: " + ", ".join(f"{t}={v:g}" for t, v in init.items()))
    print(f"outputs: {', '.join(cascade.outputs)}")
    if report:
        within = "".join(f"; {v} within each {k}" for k, v in report.passes_within.items())
        print(f"passes over {report.rank}: {report.passes}{within}")
    print()
    header = ["pass", "einsum"] if report else ["einsum"]
    rows = []
    for einsum in cascade.einsums:
        text = einsum.text + "".join(f"  [{f.text}]" for f in einsum.filters if f in cascade.filters)
        rows.append([report.einsum_pass[einsum.output], text] if report else [text])
    print(render_table(header, rows))
    return 0


def _graph(args: argparse.Namespace) -> int:
    # The same figure as `einsim plot passes` (einsim.plots: docs/plots.md).
    from einsim.einsum_cascades import load_cascade
    from einsim.plots import pass_graph, plot_pass_graph, save_figure

    cascade = load_cascade(args.name)
    # The default file is named after the cascade, whose name comes from its YAML: keep it a plain
    # file name in the current folder (a name like '../x' or '/tmp/x' wrote there).
    path = args.output or f"{safe_file_stem(cascade.name)}.png"
    save_figure(plot_pass_graph(pass_graph(cascade, args.rank)), path)
    print(f"wrote {path}")
    return 0


def _reassociate(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from einsim.einsum_cascades import analyze_passes, load_cascade
    from einsim.einsum_cascades.rewrite import find_softmax, reassociate, reassociated_yaml

    cascade = load_cascade(args.name)
    text = reassociated_yaml(cascade, args.tile_symbol)
    key = find_softmax(cascade).key
    derived = reassociate(cascade, args.tile_symbol)
    before, after = analyze_passes(cascade, key).passes, analyze_passes(derived, key).passes
    note = f"{cascade.name}: {before} pass(es) over {key} -> {after} after the reassociation"
    if args.output:
        Path(args.output).write_text(text)
        print(f"{note}; wrote {args.output}")
    else:
        print(f"# {note}")
        sys.stdout.write(text)
    return 0

