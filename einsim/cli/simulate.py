"""`einsim simulate`: one cascade on one target for one workload — latency, off-chip traffic, buffer,
energy, utilisation and the per-Einsum breakdown; `--buffer-sweep` for the traffic-versus-buffer
curve of a spatial design. With no arguments: fusemax on h100-sxm for llama3-8b at 4096 tokens."""

from __future__ import annotations

import argparse
import math
import sys

from einsim.cli.output import add_wide_argument, print_json, write_csv
from einsim.text import fit_text, format_count, format_time, render_table
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
    add_wide_argument(parser)
    parser.add_argument("--buffer-sweep", action="store_true", help="traffic, latency and energy versus global-buffer size (spatial targets)")
    parser.add_argument("--csv", help="with --buffer-sweep: also write the curve to this CSV file")
    parser.add_argument("--layer", action="store_true",
                        help="a whole transformer layer of --model, operator by operator, and the whole model "
                             "(time per layer, time to first token or per token, tokens/s, memory)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from einsim.cli.problem_args import problem_from_args
    from einsim.simulator.simulate import simulate

    if args.csv and not args.buffer_sweep:
        from einsim.errors import ConfigError

        raise ConfigError(f"--csv {args.csv}: writes the --buffer-sweep curve; add --buffer-sweep, "
                          "or use --json (or einsim sweep --out FILE for estimates as CSV rows)")
    if args.layer:
        return _layer(args)
    problem = problem_from_args(args, default_model=DEFAULT_MODEL, default_seq_len=DEFAULT_SEQ_LEN)
    if args.buffer_sweep:
        return _buffer_sweep(args, problem)
    estimate = simulate(args.cascade, problem, args.target, args.mapping, strict=True)
    if args.json:
        print_json(estimate.to_dict())
    else:
        print(estimate)
    return 0


def _layer(args: argparse.Namespace) -> int:
    """`--layer`: every operator of one layer of the model preset and the whole model."""
    from einsim.errors import ShapeError
    from einsim.simulator.gpu_cost import gpu_mapping
    from einsim.simulator.model_estimate import estimate_model
    from einsim.simulator.models import load_model

    if getattr(args, "shape", None):
        raise ShapeError("--layer needs a model preset (--model NAME --seq-len N), not --shape: a layer has "
                         "projections and an FFN whose widths only a model gives")
    ignored = [option for option, given in (("--kv-heads", args.kv_heads), ("--q-len", args.q_len),
                                            ("--causal", args.causal), ("--window", args.window),
                                            ("--dtype", args.dtype), ("--buffer-sweep", args.buffer_sweep))
               if given not in (None, False)]
    if ignored:  # the layer model takes the preset's heads, mask and element type as they are
        raise ShapeError(f"--layer does not take {', '.join(ignored)}: a layer estimate uses the model "
                         "preset's heads, mask and element type (give --model, --seq-len, --mode, --batch, "
                         "--target, --cascade, --mapping), or drop --layer for one attention problem")
    model = load_model(args.model or DEFAULT_MODEL)
    style = gpu_mapping(args.mapping).kernel_style if args.mapping else None
    cost = estimate_model(model, args.seq_len or DEFAULT_SEQ_LEN, args.target, args.mode, args.batch, style,
                          args.cascade)
    if args.json:
        print_json(layer_json(cost))
        return 0
    print(layer_report(cost))
    return 0


def layer_json(cost) -> dict:
    """The ModelCost as plain JSON values (every operator, the layer and the model totals)."""
    layer = cost.layer
    return {
        "model": layer.model, "target": layer.target, "mode": layer.mode, "batch": layer.batch,
        "seq_len": layer.seq_len, "layers": cost.layers, "layer_time_s": layer.time_s, "time_s": cost.time_s,
        "tokens_per_s": cost.tokens_per_s, "weight_bytes": cost.weight_bytes, "kv_cache_bytes": cost.kv_cache_bytes,
        "activation_bytes": cost.activation_bytes, "memory_bytes": cost.memory_bytes, "notes": list(layer.notes),
        "operators": [dict(name=op.name, kind=op.kind, time_s=op.time_s, flops=op.flops, hbm_bytes=op.hbm_bytes,
                           intensity=op.intensity, bound=op.bound, kernels=op.kernels, detail=op.detail)
                      for op in layer.operators + cost.head],
    }


def layer_report(cost) -> str:
    """The human-readable layer table and model totals."""
    layer = cost.layer
    tokens = layer.batch * (layer.seq_len if layer.mode == "prefill" else 1)
    lines = [fit_text(f"{layer.model} on {layer.target} — {layer.mode}, batch {layer.batch}, "
                      f"{'sequence' if layer.mode == 'prefill' else 'KV cache'} {layer.seq_len}: one layer, "
                      f"{tokens} new token(s)", "  "), ""]
    rows = [[op.name, op.kind, format_time(op.time_s), f"{op.time_s / layer.time_s:.0%}" if layer.time_s else "-",
             format_count(op.flops), _bytes(op.hbm_bytes), f"{op.intensity:.3g}", op.bound, op.detail]
            for op in layer.operators]
    rows.append(["layer", "", format_time(layer.time_s), "100%", format_count(layer.flops), _bytes(layer.hbm_bytes),
                 f"{layer.flops / layer.hbm_bytes:.3g}" if layer.hbm_bytes else "-", "", ""])
    lines.append(render_table(["operator", "kind", "time", "share", "FLOP", "HBM bytes", "FLOP/B", "bound", "how"],
                              rows, wrap=["how"]))
    what = "time to first token" if layer.mode == "prefill" else "time per generated token"
    lines += ["", render_table(["model", "estimate"], [
        [f"{cost.layers} layers", format_time(cost.layers * layer.time_s)],
        ["LM head" if cost.head else "LM head (no vocab in the preset)",
         format_time(sum(op.time_s for op in cost.head))],
        [what, format_time(cost.time_s)],
        ["tokens/s", f"{cost.tokens_per_s:,.1f}"],
        ["memory: weights + KV cache + activations", f"{_bytes(cost.memory_bytes)} = {_bytes(cost.weight_bytes)} + "
                                                      f"{_bytes(cost.kv_cache_bytes)} + {_bytes(cost.activation_bytes)}"],
    ])]
    lines += [fit_text(f"- {note}", "  ") for note in layer.notes]
    return "\n".join(lines)


def _buffer_sweep(args: argparse.Namespace, problem) -> int:
    from einsim.simulator.sweep import buffer_sweep

    rows = buffer_sweep(args.cascade, problem, args.target, args.mapping)
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        print_json(rows)
        return 0
    print(fit_text(f"{args.cascade} on {args.target} — {problem.name}: off-chip traffic versus global buffer "
                   "(mapping re-chosen at each size; x = times the compulsory traffic)", "  "))
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
