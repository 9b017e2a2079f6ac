"""An Estimate as text: the summary table, utilisation, one row per Einsum, the notes. What
`print(estimate)` and `einsim simulate` show (one home, so both always agree)."""

from __future__ import annotations

from typing import Any

from einsim.text import fit_text, format_count, format_energy, format_time, render_table
from einsim.units import format_bytes


def format_estimate(estimate: Any) -> str:
    """The human-readable estimate. The cascade facts simulate() recorded on it decide the words:
    `attention` (ranks M and P: Q, K, V, O and passes over K/V mean something) and
    `live_state_grows` (the pass analysis: does state live between passes grow with M)."""
    lines = [fit_text(_headline(estimate), "  "), ""]
    attention = estimate.attention
    summary = [
        ["latency", format_time(estimate.latency_s), f"bound by {estimate.bound}"],
        ["off-chip traffic", _bytes(estimate.traffic_bytes), _traffic_note(estimate) if attention else ""],
        ["on-chip buffer", f"{_bytes(estimate.buffer_bytes)} of {_bytes(estimate.buffer_capacity_bytes)}",
         ("fits" if estimate.fits else _does_not_fit(estimate))
         + (f"; the design needs {_bytes(estimate.buffer_needed_bytes)} (one array-wide tile of queries)"
            if estimate.buffer_needed_bytes is not None else "")],
        ["energy", format_energy(estimate.energy_j), _energy_split(estimate)],
        ["passes over K/V" if attention else "passes", str(estimate.passes), _passes_note(estimate)],
    ]
    lines.append(render_table(["", "estimate", "why"], summary, wrap=["why"]))
    lines.append("")
    lines.append(fit_text("utilisation: " + "  ".join(f"{unit} {value:.0%}" for unit, value
                                                      in estimate.utilization.items()), "  "))
    lines.append("")
    rows = [[e.einsum, e.pass_index, e.unit, ", ".join(f"{format_count(v)} {k}" for k, v in e.compute_ops.items()),
             _bytes(e.traffic_bytes), format_time(e.latency_s), format_energy(e.energy_j)]
            for e in estimate.per_einsum]
    lines.append(render_table(["einsum", "pass", "unit", "operations", "off-chip", "time on unit", "energy"], rows,
                              wrap=["operations"]))
    if estimate.notes:
        lines.append("")
        lines += [fit_text(f"- {note}", "  ") for note in estimate.notes]
    return "\n".join(lines)


def _headline(estimate: Any) -> str:
    where = f"{estimate.cascade} on {estimate.target}"
    if not estimate.attention:
        # the problem's batch/heads/queries/keys bind only the ranks this cascade names: show
        # the sizes actually simulated (the rest are the cascade's own defaults)
        sizes = ", ".join(f"{rank}={size}" for rank, size in estimate.rank_sizes.items())
        return f"{where} — ranks {sizes} (the workload's sizes where the cascade names them, else its defaults)"
    p = estimate.problem
    heads = f"{p.q_heads} heads" + (f" ({p.kv_heads} KV heads)" if p.kv_heads != p.q_heads else "")
    mask = ", causal" if p.causal else ""
    if p.window:
        mask += f", window {p.window[0]},{p.window[1]}"
    if p.filter_inputs is not None:
        mask += f", filters read {p.filter_inputs.describe()}"
    return (f"{where} — {p.name or 'problem'}: batch {p.batch}, {heads}, "
            f"{p.q_len} {'query' if p.q_len == 1 else 'queries'} x {p.kv_len} keys, head dim {p.head_dim}{mask}")


def _passes_note(estimate: Any) -> str:
    if not estimate.attention:
        return ""
    if estimate.passes == 1:
        return "1: needs only a tile of state per query"
    if estimate.live_state_grows is False:
        return "live state between passes does not grow with the sequence"
    return "live state between passes grows with the sequence"


def _energy_split(estimate: Any) -> str:
    if estimate.energy_j <= 0:
        return ""
    parts = sorted(estimate.energy_by_component.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {v / estimate.energy_j:.0%}" for k, v in parts)


def _does_not_fit(estimate: Any) -> str:
    # a GPU's shared memory is not a cache the model spills from: the kernel would not launch
    if any(note.startswith("does not fit: needs") for note in estimate.notes):
        return "does not fit: the kernel cannot launch"
    return "does not fit: live state spills"


def _traffic_note(estimate: Any) -> str:
    p = estimate.problem
    compulsory = p.dtype_bytes * p.batch * (p.q_heads * p.q_len * (p.head_dim + p.v_head_dim)
                                            + p.kv_heads * p.kv_len * (p.head_dim + p.v_head_dim))
    return f"{estimate.traffic_bytes / compulsory:.3g}x the compulsory Q, K, V, O"


def _bytes(value: float | None) -> str:
    return "—" if value is None or value != value else format_bytes(value)
