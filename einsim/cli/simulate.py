"""`einsim simulate`: one cascade on one target for one workload — latency, off-chip traffic, buffer,
energy, utilisation and the per-Einsum breakdown; `--buffer-sweep` for the traffic-versus-buffer
curve of a spatial design. With no arguments: fusemax on h100-sxm for llama3-8b at 4096 tokens."""

from __future__ import annotations

import argparse
import math
import sys

from einsim.cli.output import print_json, render_table, write_csv

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
    from einsim.simulator.simulate import resolve_cascade, resolve_target, simulate

    if args.csv and not args.buffer_sweep:
        from einsim.errors import ConfigError

        raise ConfigError(f"--csv {args.csv}: writes the --buffer-sweep curve; add --buffer-sweep, "
                          "or use --json (or einsim sweep --out FILE for estimates as CSV rows)")
    problem = problem_from_args(args, default_model=DEFAULT_MODEL, default_seq_len=DEFAULT_SEQ_LEN)
    if args.buffer_sweep:
        return _buffer_sweep(args, problem)
    target = resolve_target(args.target)
    estimate = simulate(args.cascade, problem, target, args.mapping)
    _check_runs(estimate, target.kind, args.mapping)
    if args.json:
        print_json(estimate.to_json())
    else:
        cascade = resolve_cascade(args.cascade)
        attention = {"M", "P"} <= set(cascade.ranks)
        text = report(estimate, _live_grows(args.cascade), attention=attention)
        if not attention:
            # the workload's batch/heads/queries/keys bind only the ranks this cascade names; show
            # the sizes actually simulated (the rest are the cascade's own defaults)
            bound = cascade.bind(problem.rank_sizes())
            sizes = ", ".join(f"{rank}={bound[rank]}" for rank in cascade.ranks)
            first, rest = text.split("\n", 1)
            text = (f"{estimate.cascade} on {estimate.target} — ranks {sizes} (the workload's sizes where the "
                    f"cascade names them, else its defaults)\n{rest}")
        print(text)
    return 0


def _live_grows(cascade_name: str) -> bool | None:
    """Whether some state live between passes over M grows with M (None: the cascade has no M)."""
    from einsim.einsum_cascades import analyze_passes
    from einsim.simulator.simulate import resolve_cascade

    cascade = resolve_cascade(cascade_name)
    if "M" not in cascade.ranks:
        return None
    return any(live.grows_with_rank for live in analyze_passes(cascade, "M").live_across_passes)


def _check_runs(estimate, kind: str, mapping: str | None) -> None:
    """A design that cannot run at all has no figures to print: a spatial design whose buffer
    cannot hold even one query row's state (its latency is undefined), or a GPU kernel whose
    user-given tiles overflow shared memory or registers (it would not launch). A spatial design
    whose live state merely spills is an estimate (more traffic), not an error."""
    from einsim.errors import ConfigError

    where = f"{mapping}: " if mapping else ""
    fix = ("choose smaller key_tile/query_tile/query_block in the mapping, or a target with a larger buffer"
           if kind == "spatial" else "choose smaller block_m, block_n or num_stages in the mapping")
    if kind == "gpu" and not estimate.fits:
        need = next((n for n in estimate.notes if n.startswith("does not fit")), "does not fit")
        raise ConfigError(f"{where}{estimate.cascade} on {estimate.target}: the kernel cannot launch, it {need.removeprefix('does not fit: ')}; {fix}")
    if not math.isfinite(estimate.latency_s):
        raise ConfigError(f"{where}{estimate.cascade} on {estimate.target}: "
                          f"even one query row's resident state does not fit in {_bytes(estimate.buffer_capacity_bytes)}; {fix}")


def report(estimate, live_grows: bool | None = True, attention: bool = True) -> str:
    """The human-readable estimate: a summary, utilisation, the per-Einsum table and the notes.
    `live_grows`: whether the state live between passes grows with the sequence (the pass
    analysis says; decode-splitkv's per-chunk partials do not). `attention`: the cascade has a
    K/V rank M and a query rank P, so Q, K, V, O and passes over K/V mean something."""
    w = estimate.problem
    heads = f"{w.q_heads} heads" + (f" ({w.kv_heads} KV heads)" if w.kv_heads != w.q_heads else "")
    mask = ", causal" if w.causal else ""
    if w.window:
        mask += f", window {w.window[0]},{w.window[1]}"
    lines = [
        f"{estimate.cascade} on {estimate.target} — {w.name or 'workload'}: batch {w.batch}, {heads}, "
        f"{w.q_len} {'query' if w.q_len == 1 else 'queries'} x {w.kv_len} keys, head dim {w.head_dim}{mask}",
        "",
    ]
    summary = [
        ["latency", _time(estimate.latency_s), f"bound by {estimate.bound}"],
        ["off-chip traffic", _bytes(estimate.traffic_bytes), _traffic_note(estimate) if attention else ""],
        ["on-chip buffer", f"{_bytes(estimate.buffer_bytes)} of {_bytes(estimate.buffer_capacity_bytes)}",
         ("fits" if estimate.fits else _does_not_fit(estimate))
         + (f"; the design needs {_bytes(estimate.buffer_needed_bytes)} (one array-wide tile of queries)"
            if estimate.buffer_needed_bytes is not None else "")],
        ["energy", _energy(estimate.energy_j), ", ".join(f"{k} {v / estimate.energy_j:.0%}" for k, v in
                                                        sorted(estimate.energy_by_component.items(), key=lambda kv: -kv[1])[:3]
                                                        if estimate.energy_j > 0)],
        ["passes over K/V" if attention else "passes", str(estimate.passes), "" if not attention
         else "1: needs only a tile of state per query" if estimate.passes == 1
         else "live state between passes grows with the sequence" if live_grows
         else "live state between passes does not grow with the sequence"],
    ]
    lines.append(render_table(["", "estimate", "why"], summary))
    lines.append("")
    util = "  ".join(f"{unit} {value:.0%}" for unit, value in estimate.utilization.items())
    lines.append(f"utilisation: {util}")
    lines.append("")
    rows = []
    for e in estimate.per_einsum:
        ops = ", ".join(f"{_count(v)} {k}" for k, v in e.compute_ops.items())
        rows.append([e.einsum, e.pass_index, e.unit, ops, _bytes(e.traffic_bytes), _time(e.latency_s), _energy(e.energy_j)])
    lines.append(render_table(["einsum", "pass", "unit", "operations", "off-chip", "time on unit", "energy"], rows))
    if estimate.notes:
        lines.append("")
        lines += [f"- {note}" for note in estimate.notes]
    return "\n".join(lines)


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
                      _time(r["latency_s"]), state, r["query_block"]])
    print(render_table(["buffer", "traffic", "x compulsory", "latency", "live state", "query block"], table))
    if args.csv:
        print(f"\nwrote {args.csv}", file=sys.stderr)
    return 0


def _does_not_fit(estimate) -> str:
    # a GPU's shared memory is not a cache the model spills from: the kernel would not launch
    if any(note.startswith("does not fit: needs") for note in estimate.notes):
        return "does not fit: the kernel cannot launch"
    return "does not fit: live state spills"


def _traffic_note(estimate) -> str:
    from einsim.problem import Problem

    w: Problem = estimate.problem
    if w.dtype_bytes <= 0:
        return ""
    compulsory = w.dtype_bytes * w.batch * (w.q_heads * w.q_len * (w.head_dim + w.v_head_dim)
                                            + w.kv_heads * w.kv_len * (w.head_dim + w.v_head_dim))
    return f"{estimate.traffic_bytes / compulsory:.3g}x the compulsory Q, K, V, O"


def _time(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds:.3g} s"


def _bytes(value: float) -> str:
    from einsim.units import format_bytes

    return "—" if value is None or math.isnan(value) else format_bytes(value)


def _energy(joules: float) -> str:
    for unit, scale in (("kJ", 1e3), ("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9)):
        if joules >= scale:
            return f"{joules / scale:.4g} {unit}"
    return f"{joules:.3g} J"


def _count(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"
