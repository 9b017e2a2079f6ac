"""`einsim cascades list|show|graph|reassociate|tiles`: the library of cascades, one cascade's
Einsums with the pass each runs in, its dependency graph drawn to a PNG, its 1-pass form derived by
the FuseMax reassociation, and which (query tile, key tile) pairs its filters leave empty,
partial or full."""

from __future__ import annotations

import argparse

from einsim.cli.output import add_style_argument, add_wide_argument, print_json, safe_file_stem
from einsim.text import fit_text, render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cascades", help="list, show and draw Einsum cascades")
    actions = parser.add_subparsers(dest="cascades_action", metavar="ACTION")
    listing = actions.add_parser("list", help="the cascades shipped in the library, with their passes")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(listing)
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="a cascade's ranks, inputs and Einsums with their pass numbers")
    show.add_argument("name", help="library name (einsim cascades list) or path to a cascade YAML")
    show.add_argument("--rank", default=None, help="rank whose passes are numbered (default M)")
    show.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(show)
    show.set_defaults(handler=_show)
    graph = actions.add_parser("graph", help="draw the dependency graph, Einsums coloured by pass")
    graph.add_argument("name", help="library name or path to a cascade YAML")
    graph.add_argument("-o", "--output", default=None, help="figure to write: .png, .svg or .pdf (default NAME.png)")
    graph.add_argument("--rank", default=None, help="rank whose passes colour the graph (default M)")
    add_style_argument(graph)
    graph.set_defaults(handler=_graph)
    rewrite = actions.add_parser("reassociate", help="derive the 1-pass running-state form of a plain softmax cascade "
                                                     "(the FuseMax reassociation) and print it as YAML")
    rewrite.add_argument("name", help="library name or path to a plain softmax-attention cascade YAML")
    rewrite.add_argument("-o", "--output", default=None, help="write the YAML to this file instead of printing it")
    rewrite.add_argument("--tile-symbol", default="block_m", help="size symbol of the key tile (default block_m)")
    rewrite.set_defaults(handler=_reassociate)
    tiles = actions.add_parser("tiles", help="classify the (query tile, key tile) pairs of a cascade's filters: "
                                             "empty, partial or full")
    tiles.add_argument("name", help="library name or path to a cascade YAML")
    tiles.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="a size or symbol, e.g. --set kv_len=4096 --set window=256 (repeatable)")
    tiles.add_argument("--block", default="128x128", help="query x key tile, default 128x128")
    tiles.add_argument("--tensors", default=None, help="the inputs the filters read (DQ, DK, BLOCKS): an .npz file of "
                       "arrays by name, or a description: documents:MEAN or blocks:DENSITY (docs/simulator.md)")
    tiles.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(tiles)
    tiles.set_defaults(handler=_tiles)
    parser.set_defaults(handler=_list, json=False, wide=False)


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
    print(render_table(["cascade", "passes over M", "einsums", "represents"], table, shrink=["represents"]))
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
    print(fit_text(f"{cascade.name}: {cascade.description}", "  "))
    if cascade.represents:
        print(fit_text(f"represents: {', '.join(cascade.represents)}", "  "))
    print(fit_text("ranks: " + ", ".join(f"{r}={v}" for r, v in cascade.ranks.items()), "  "))
    if cascade.partitions:
        print(fit_text("partitions: " + ", ".join(f"{p} -> {' x '.join(parts)}" for p, parts in cascade.partitions.items()), "  "))
    if cascade.symbols:
        print(fit_text("defaults: " + ", ".join(f"{s}={v}" for s, v in cascade.symbols.items()), "  "))
    print(fit_text("inputs: " + ", ".join(f"{t}[{','.join(r)}]" for t, r in cascade.inputs.items()), "  "))
    if cascade.filters:
        print(fit_text("filters: " + "; ".join(f.text for f in cascade.filters), "  "))
    init = {e.output: e.init for e in cascade.einsums if e.iterative_rank}
    if init:
        print(fit_text("init: " + ", ".join(f"{t}={v:g}" for t, v in init.items()), "  "))
    print(fit_text(f"outputs: {', '.join(cascade.outputs)}", "  "))
    if report:
        within = "".join(f"; {v} within each {k}" for k, v in report.passes_within.items())
        print(f"passes over {report.rank}: {report.passes}{within}")
    print()
    header = ["pass", "einsum"] if report else ["einsum"]
    rows = []
    for einsum in cascade.einsums:
        text = einsum.text + "".join(f"  [{f.text}]" for f in einsum.filters if f in cascade.filters)
        rows.append([report.einsum_pass[einsum.output], text] if report else [text])
    print(render_table(header, rows, wrap=["einsum"]))
    return 0


def _graph(args: argparse.Namespace) -> int:
    # The same figure as `einsim plot passes` (einsim.plots: docs/plots.md).
    from einsim.einsum_cascades import load_cascade
    from einsim.plots import pass_graph, plot_pass_graph, save_figure

    cascade = load_cascade(args.name)
    # The default file is named after the cascade, whose name comes from its YAML: keep it a plain
    # file name in the current folder (a name like '../x' or '/tmp/x' wrote there).
    path = args.output or f"{safe_file_stem(cascade.name)}.png"
    save_figure(plot_pass_graph(pass_graph(cascade, args.rank), style=args.style), path)
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



_TILE_MARKS = {0: ".", 1: "+", 2: "#"}  # EMPTY, PARTIAL, FULL


def _tiles(args: argparse.Namespace) -> int:
    from einsim.einsum_cascades import load_cascade
    from einsim.einsum_cascades.tiles import classify_tiles
    from einsim.errors import ShapeError

    cascade = load_cascade(args.name)
    sizes = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            sizes[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ShapeError(f"--set {item}: expected NAME=NUMBER, e.g. --set kv_len=4096") from None
    try:
        block_q, block_k = (int(x) for x in args.block.lower().split("x"))
    except ValueError:
        raise ShapeError(f"--block {args.block}: expected QUERYxKEY, e.g. 128x64") from None
    tensors = None
    read = sorted({t for f in cascade.filters for t in f.tensors})
    if read and not args.tensors:
        raise ShapeError(f"{cascade.name}: its filters read {', '.join(read)}; give their values with --tensors FILE.npz "
                         f"(arrays named {', '.join(read)}) or a description (documents:1024, blocks:0.25)")
    if args.tensors:  # an .npz of arrays or a description (documents:MEAN, blocks:DENSITY)
        from einsim.einsum_cascades.filter_values import filter_values
        from einsim.filter_inputs import FilterInputs

        tensors = filter_values(cascade, cascade.bind(sizes), FilterInputs.of(args.tensors))
    result = classify_tiles(cascade, sizes, block_q, block_k, tensors)
    summary = result.summary()
    if args.json:
        first, last = result.key_ranges()
        print_json({"cascade": cascade.name, "block": [block_q, block_k], "batch": list(result.batch), **summary,
                    "key_ranges": [first.tolist(), last.tolist()]})
        return 0
    print(fit_text(f"{cascade.name}: {result.state.shape[-2]} query tiles x {result.state.shape[-1]} key tiles of "
                   f"{block_q} x {block_k}" + (f", per {', '.join(result.batch)}" if result.batch else ""), "  "))
    print(fit_text(f"empty {summary['empty']}, partial {summary['partial']}, full {summary['full']} of "
                   f"{summary['tiles']} tiles; visited {summary['visited_fraction']:.1%}; visible pairs "
                   f"{summary['visible_pairs']} ({summary['density']:.2%} of {summary['pairs']})", "  "))
    state = result.state.reshape((-1,) + result.state.shape[-2:])[0]
    if state.shape[0] <= 64 and state.shape[1] <= 96:
        print("tiles (rows: query tiles; . empty, + partial, # full)" + (" of the first batch position" if result.batch else ""))
        for row in state:
            print("  " + "".join(_TILE_MARKS[int(v)] for v in row))
    return 0
