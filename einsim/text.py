"""Numbers and tables as text: what einsim prints, from the CLI and from an Estimate's __str__.
Bottom layer (no einsim imports), so the simulator can print itself without the CLI."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def format_number(value: Any) -> str:
    """Numbers to at most 4 significant digits, with engineering suffixes for large magnitudes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) and abs(value) < 100_000:
        return str(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    magnitude = abs(value)
    for threshold, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold * 10:
            return f"{value / threshold:.4g}{suffix}"
    return f"{value:.4g}"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain, aligned text table (numbers right-aligned)."""
    cells = [[format_number(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    numeric_columns = [
        all(_looks_numeric(row[i]) for row in cells) if cells else False for i in range(len(headers))
    ]
    out = [line(headers, numeric_columns), line(["-" * w for w in widths], numeric_columns)]
    out += [line(row, numeric_columns) for row in cells]
    return "\n".join(out)


def _looks_numeric(text: str) -> bool:
    stripped = text.rstrip("kMGTP%x")
    try:
        float(stripped)
    except ValueError:
        return False
    return True


def format_time(seconds: float | None) -> str:
    """4.2e-5 -> '42 us'; None or NaN -> '—'."""
    if seconds is None or math.isnan(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds:.3g} s"


def format_energy(joules: float) -> str:
    """4.975e-3 -> '4.975 mJ'."""
    for unit, scale in (("kJ", 1e3), ("J", 1.0), ("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9)):
        if joules >= scale:
            return f"{joules / scale:.4g} {unit}"
    return f"{joules:.3g} J"


def format_count(value: float) -> str:
    """3.4e9 -> '3.4G' (operation counts)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"
