"""`einsim targets list|show NAME`: the shipped hardware presets and what one of them (or a user's
YAML file) contains, with units."""

from __future__ import annotations

import argparse

from einsim.cli.output import add_wide_argument, print_json
from einsim.text import fit_text, render_table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("targets", help="list hardware target presets or show one")
    actions = parser.add_subparsers(dest="targets_action", metavar="ACTION")
    listing = actions.add_parser("list", help="the shipped presets")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(listing)
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one target (preset name or YAML path), with units")
    show.add_argument("name", help="preset name (einsim targets list) or path to a target YAML file")
    show.add_argument("--json", action="store_true", help="print the parsed target as JSON (SI units)")
    add_wide_argument(show)
    show.set_defaults(handler=_show)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])


def _list(args: argparse.Namespace) -> int:
    from einsim.targets import load_target, target_names

    rows = []
    for name in target_names():
        target = load_target(name)
        matrix = target.unit("matrix")
        peak, _ = target.peak_ops_per_s(matrix, source="datasheet")
        rows.append(
            {
                "name": name,
                "kind": target.kind,
                "matrix_tmac_s": round(peak / 1e12, 2),
                "offchip_gb_s": round(target.offchip.bandwidth("datasheet") / 1e9, 1),
                "description": target.description,
            }
        )
    if args.json:
        print_json(rows)
    else:
        print(render_table(["name", "kind", "matrix TMAC/s", "off-chip GB/s", "description"],
                           [list(r.values()) for r in rows], shrink=["description"]))
    return 0


def _show(args: argparse.Namespace) -> int:
    from einsim.targets import load_target
    from einsim.units import format_bytes, format_rate

    target = load_target(args.name)
    if args.json:
        print_json(target)
        return 0
    print(fit_text(f"{target.name} ({target.kind}): {target.description}", "  "))
    print(f"  from {target.source_path}")
    print(f"  clock {format_rate(target.clock_hz, 'Hz')}, word {target.word_bytes} B, "
          f"{target.parallel_units} x {target.parallel_unit_name}, launch overhead {target.launch_overhead_s * 1e6:g} us")
    print()
    rows = []
    for unit in target.compute_units.values():
        if unit.via is not None:
            rows.append([unit.name, unit.kind, f"via {unit.via}", "", f"{unit.ops_per_exp:g} ops/exp", "", "", ""])
            continue
        dtype = target.default_dtype
        derived, _ = target.peak_ops_per_s(unit, dtype, "derived")
        datasheet, s_used = target.peak_ops_per_s(unit, dtype, "datasheet")
        measured, m_used = target.peak_ops_per_s(unit, dtype, "measured")
        ops = ", ".join(f"{k}:{v:g}" for k, v in unit.ops_per_cycle.items())
        rows.append([
            unit.name, unit.kind, "x".join(map(str, unit.shape)) if unit.shape else f"{unit.count}/{target.parallel_unit_name}",
            ops, format_rate(derived, "op/s"),
            format_rate(datasheet, "op/s") if s_used.startswith("datasheet") else "-",
            format_rate(measured, "op/s") if m_used.startswith("measured") else "-",
            ", ".join(f"{k}:{v * 1e12:g} pJ" for k, v in unit.energy_per_op.items()),
        ])
    print(render_table(["unit", "kind", "count/shape", "ops/cycle (per instance)", "derived", "datasheet", "measured",
                        "energy/op"], rows, wrap=["ops/cycle (per instance)", "energy/op"], drop=["derived"]))
    print("  (a matrix unit's op is one MAC = 2 FLOP; a vector unit's op is one lane instruction)")
    print()
    rows = []
    for level in target.memory_levels:
        rows.append([
            level.name, format_bytes(level.capacity_bytes), level.instances,
            format_rate(level.bandwidth_bytes_per_s, "B/s"),
            format_rate(level.measured_bandwidth_bytes_per_s, "B/s") if level.measured_bandwidth_bytes_per_s else "-",
            f"{level.read_energy_j_per_byte * 1e12:.3g}", f"{level.write_energy_j_per_byte * 1e12:.3g}",
        ])
    print(render_table(["memory (inner->outer)", "capacity/instance", "instances", "bandwidth", "measured",
                        "read pJ/B", "write pJ/B"], rows))
    if target.sources:
        print()
        print("sources:")
        for source in target.sources:
            print(fit_text(f"  - {source}", "    "))
    return 0
