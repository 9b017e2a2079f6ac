"""`einsim models list`: the workload presets (the FuseMax paper's models and current LLMs) and the
attention-layer shape each gives."""

from __future__ import annotations

import argparse

from einsim.cli.output import add_wide_argument, print_json
from einsim.text import fit_text, render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list model presets (workloads)")
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    listing = actions.add_parser("list", help="the shipped model presets")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(listing)
    listing.set_defaults(handler=_list)
    parser.set_defaults(handler=_list, json=False, wide=False)


def _list(args: argparse.Namespace) -> int:
    from einsim.simulator.models import load_model, model_names

    presets = [load_model(name) for name in model_names()]
    if args.json:
        print_json(presets)
        return 0
    rows = []
    for m in presets:
        mask = "causal" if m.causal else "full"
        if m.window:
            mask += f", window {m.window[0]},{m.window[1]}"
        rows.append([m.name, m.batch, m.hidden, m.heads, m.key_value_heads, m.head_dim, m.ffn, m.layers, mask, m.description])
    print(render_table(["model", "batch", "hidden", "heads", "kv heads", "head dim", "FFN", "layers", "mask",
                        "description"], rows, shrink=["description"], drop=["description"]))
    print(fit_text("\nprefill: q_len = kv_len = --seq-len; decode: q_len = 1, kv_len = --seq-len "
                   "(einsim simulate --model M --seq-len N --mode decode)"))
    return 0
