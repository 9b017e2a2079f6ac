"""`einsim plot traffic-vs-buffer | speedup | passes`: the figures of a paper besides the roofline,
each with its data as CSV or JSON."""

from __future__ import annotations

import argparse

from einsim.text import fit_text, render_table
from einsim.cli.roofline import add_output_arguments, add_target_cascade_arguments, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    from einsim.cli.problem_args import add_problem_arguments

    parser = subparsers.add_parser("plot", help="traffic against buffer, speedup bars, pass-coloured cascade graph")
    kinds = parser.add_subparsers(dest="plot_kind", metavar="PLOT")

    traffic = kinds.add_parser(
        "traffic-vs-buffer", help="off-chip traffic against on-chip buffer capacity, per cascade",
        description="Simulate each cascade with the target's on-chip buffer (the level in front of "
        "DRAM/HBM) at each capacity: multi-pass cascades step down where their intermediates fit.")
    add_target_cascade_arguments(traffic, ("attention-3pass", "fusemax"))
    add_problem_arguments(traffic)
    traffic.add_argument("--mapping", help="mapping YAML for the simulator")
    traffic.add_argument("--min-buffer", default="16 KiB", help="smallest capacity (default '16 KiB')")
    traffic.add_argument("--max-buffer", default="4 GiB", help="largest capacity (default '4 GiB')")
    traffic.add_argument("--per-octave", type=int, default=2, help="capacities per factor of two (default 2)")
    add_output_arguments(traffic)
    traffic.set_defaults(handler=_traffic)

    speedup = kinds.add_parser(
        "speedup", help="speedup and energy of designs per model and sequence length (grouped bars)",
        description="The FuseMax paper's comparison: each design (a target running a cascade) relative to "
        "a baseline design, per model and sequence length, with the geometric mean.")
    speedup.add_argument("--design", action="append", metavar="LABEL=TARGET:CASCADE",
                         help="a design; repeatable (default: Unfused=unfused-cloud:attention-3pass, "
                         "FLAT=flat-cloud:attention-3pass, FuseMax=fusemax-cloud:fusemax)")
    speedup.add_argument("--baseline", help="the design others are compared with (default: the first)")
    speedup.add_argument("--model", action="append", metavar="M",
                         help="model preset; repeatable (default BERT TrXL T5 XLM)")
    speedup.add_argument("--seq-lens", default="1k,4k,16k,64k,256k,1m",
                         help="sequence lengths, comma-separated (default 1k,4k,16k,64k,256k,1m)")
    speedup.add_argument("--mode", choices=("prefill", "decode"), default="prefill",
                         help="prefill: each sequence's N queries over its N keys; decode: one query per "
                         "sequence over a cache of N keys (default prefill)")
    speedup.add_argument("--batch", type=int, help="override the presets' batch")
    speedup.add_argument("--linear", action="store_true", help="linear speedup axis (default log)")
    add_output_arguments(speedup)
    speedup.set_defaults(handler=_speedup)

    passes = kinds.add_parser("passes", help="a cascade's dependency graph coloured by pass")
    passes.add_argument("cascade", metavar="NAME", help="cascade name or YAML path")
    passes.add_argument("--rank", help="the rank whose passes colour the graph (default M when the cascade has it)")
    passes.add_argument("--no-text", action="store_true", help="graph only, without the Einsums listed beside it")
    add_output_arguments(passes)
    passes.set_defaults(handler=_passes)

    layer = kinds.add_parser("layer", help="one transformer layer: every operator on the roofline, and its time share",
                             description="Every operator of one layer of a model preset (GEMMs, attention, norms, "
                             "rotary, activations, residuals) on the target's roofline, with the layer's time split.")
    layer.add_argument("--target", default="h200", help="target preset or YAML path (default h200)")
    layer.add_argument("--model", default="llama3-8b", help="model preset (default llama3-8b)")
    layer.add_argument("--seq-len", type=int, default=4096, help="sequence length, or the KV cache in decode")
    layer.add_argument("--mode", choices=("prefill", "decode"), default="prefill",
                       help="prefill: --seq-len tokens through the layer; decode: one token per sequence "
                       "against a KV cache of --seq-len (default prefill)")
    layer.add_argument("--batch", type=int, help="override the preset's batch")
    layer.add_argument("--kernel-style", help="the attention kernel's style (default: the GPU family's, cudnn on Hopper)")
    add_output_arguments(layer)
    layer.set_defaults(handler=_layer)

    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])


def _bytes_argument(text: str, option: str) -> float:
    from einsim.errors import ConfigError
    from einsim.units import parse_bytes

    try:
        value = parse_bytes(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ConfigError(f"{option} expects a positive size such as '64 KiB', '16 MiB' or '1 GiB', got {text!r}")
    return value


def _traffic(args: argparse.Namespace) -> int:
    from einsim.plots.traffic_data import traffic_steps
    from einsim.plots.traffic_buffer import plot_traffic_vs_buffer
    from einsim.cli.problem_args import problem_from_args
    from einsim.simulator.sweep import buffer_capacities
    from einsim.units import format_bytes

    from einsim.errors import ConfigError

    problem = problem_from_args(args)
    low, high = _bytes_argument(args.min_buffer, "--min-buffer"), _bytes_argument(args.max_buffer, "--max-buffer")
    if high < low or args.per_octave < 1:
        raise ConfigError(f"--max-buffer must be at least --min-buffer and --per-octave at least 1 "
                          f"(got {args.min_buffer!r}..{args.max_buffer!r}, {args.per_octave})")
    capacities = buffer_capacities(low, high, args.per_octave)
    data = [traffic_steps(args.cascade or list(args.cascade_default), problem, target, capacities, mapping=args.mapping)
            for target in args.target]
    rows = [row for d in data for row in d.rows()]

    def table() -> None:
        for d in data:
            print(f"{d.target}, {d.problem.name}: compulsory traffic {format_bytes(d.compulsory_bytes)}")
            print(render_table(["cascade", "buffer", "traffic", "x compulsory", "passes", "fits"],
                               [[p.cascade, format_bytes(p.buffer_capacity_bytes), format_bytes(p.traffic_bytes),
                                 p.traffic_ratio, p.passes, p.fits] for p in d.points]))
            for note in d.notes:
                print(f"note: {note}")
            print()

    return emit(args, data, rows, lambda: plot_traffic_vs_buffer(data, style=args.style), table)


def _speedup(args: argparse.Namespace) -> int:
    from einsim.plots.speedup_data import PAPER_DESIGNS, parse_design, speedup_data
    from einsim.shapes import parse_lengths
    from einsim.plots.speedup import plot_speedup

    designs = [parse_design(text) for text in args.design] if args.design else list(PAPER_DESIGNS)
    data = speedup_data(args.model or ["BERT", "TrXL", "T5", "XLM"], parse_lengths(args.seq_lens), designs,
                        baseline=args.baseline, mode=args.mode, batch=args.batch)
    rows = [dict(r.__dict__) for r in data.rows]

    def table() -> None:
        print(render_table(["model", "seq len", "design", "latency s", "energy J", "speedup", "energy ratio", "bound"],
                           [[r.model, r.seq_len, r.design, r.latency_s, r.energy_j, r.speedup, r.energy_ratio, r.bound]
                            for r in data.rows]))
        print(fit_text("geomean: " + ", ".join(f"{d.label} {data.geomean(d.label):.3g}x speedup, "
                                               f"{data.geomean(d.label, 'energy_ratio'):.3g} energy"
                                               for d in designs), "  "))

    return emit(args, data, rows, lambda: plot_speedup(data, log_speedup=not args.linear, style=args.style), table)


def _layer(args: argparse.Namespace) -> int:
    from einsim.cli.simulate import layer_json, layer_report
    from einsim.plots.layer import plot_layer
    from einsim.simulator.gpu_cost import gpu_roofs
    from einsim.simulator.model_estimate import estimate_model
    from einsim.simulator.models import load_model
    from einsim.simulator.simulate import resolve_target

    from einsim.errors import ConfigError

    target = resolve_target(args.target)
    if target.kind != "gpu":
        raise ConfigError(f"{target.name}: the layer roofline needs a GPU target (einsim simulate --layer covers "
                          "spatial targets)")
    model = load_model(args.model)
    cost = estimate_model(model, args.seq_len, target, args.mode, args.batch, args.kernel_style)
    roofs = gpu_roofs(target, model.dtype)
    data = layer_json(cost)
    return emit(args, data, data["operators"], lambda: plot_layer(cost, roofs.matmul_flops, roofs.hbm_bytes_per_s, style=args.style),
                lambda: print(layer_report(cost)))


def _passes(args: argparse.Namespace) -> int:
    from einsim.plots.pass_graph_data import pass_graph
    from einsim.plots.passes_graph import plot_pass_graph

    data = pass_graph(args.cascade, args.rank)

    def table() -> None:
        print(f"{data.cascade}: {data.passes} pass(es) over {data.rank}" if data.passes else data.cascade)
        print(render_table(["node", "kind", "pass", "colour", "Einsum"],
                           [[n.name, n.kind, n.pass_index or "-", n.color, n.text] for n in data.nodes]))

    return emit(args, data, data.rows(), lambda: plot_pass_graph(data, show_text=not args.no_text, style=args.style), table)
