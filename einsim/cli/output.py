"""Shared output for subcommands: aligned text tables, JSON and CSV, so every command prints the
same way."""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from einsim.jsonio import dump_json, to_jsonable


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


def print_json(value: Any, stream: TextIO | None = None) -> None:
    dump_json(value, stream or sys.stdout)


def write_csv(rows: Sequence[dict[str, Any]], destination: str | Path | TextIO) -> None:
    """Rows of dicts to CSV; the header is the union of keys in first-seen order."""
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers]
    if isinstance(destination, (str, Path)):
        with open(destination, "w", newline="") as handle:
            _write_rows(handle, headers, rows)
    else:
        _write_rows(destination, headers, rows)


def _write_rows(handle: TextIO | io.StringIO, headers: list[str], rows: Sequence[dict[str, Any]]) -> None:
    writer = csv.DictWriter(handle, fieldnames=headers)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: to_jsonable(v) for k, v in row.items()})
