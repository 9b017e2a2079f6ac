"""Numbers and tables as text: what einsim prints, from the CLI and from an Estimate's __str__.
Bottom layer (no einsim imports), so the simulator can print itself without the CLI."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# What the command line fits its tables and prose to unless `--wide` is given (a terminal of 100
# columns, and a page of docs). Python callers get full width unless they ask (table_width).
TABLE_WIDTH = 100
_WIDTH: ContextVar[int | None] = ContextVar("einsim_table_width", default=None)
ELLIPSIS = "…"
MIN_SHRUNK = 16  # a narrowed free-text column keeps at least this many characters (or its header's)


@contextmanager
def table_width(width: int | None) -> Iterator[None]:
    """Within the block, render_table and fit_text fit `width` columns (None: no limit)."""
    token = _WIDTH.set(width)
    try:
        yield
    finally:
        _WIDTH.reset(token)


def fit_text(text: str, indent: str = "") -> str:
    """`text` wrapped to the current width (continuation lines indented by `indent`); unchanged
    when there is no limit. Tokens longer than the width (paths, URLs) are never broken."""
    width = _WIDTH.get()
    if width is None or all(len(line) <= width for line in text.splitlines()):
        return text
    return "\n".join(textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False,
                                    break_on_hyphens=False) if len(line) > width else line
                     for line in text.splitlines())


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


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, wrap: Sequence[str] = (),
                 shrink: Sequence[str] = (), drop: Sequence[str] = ()) -> str:
    """A plain, aligned text table (numbers right-aligned), fitted to the current width
    (table_width). Only the columns a caller names change: free text in `wrap` columns continues
    on the next lines, free text in `shrink` columns is shortened (cells end in '…'), and if that
    is not enough the columns in `drop` are left out, in that order. A table whose other columns
    alone are wider stays wider. A line under the table says what was shortened or left out (the
    command line's `--wide` prints everything)."""
    headers = list(headers)
    cells = [[format_number(v) for v in row] for row in rows]
    width = _WIDTH.get()
    note = ""
    if width is not None:
        headers, cells, note = _fit(headers, cells, width, wrap, shrink, drop)
    table = _aligned(headers, cells)
    return table + ("\n" + fit_text(f"({note}; --wide shows all)", " ") if note else "")


def _natural(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    return widths


def _fit(headers: list[str], cells: list[list[str]], width: int, wrap: Sequence[str], shrink: Sequence[str],
         drop: Sequence[str]) -> tuple[list[str], list[list[str]], str]:
    """The columns kept, their cells wrapped or shortened so the table is at most `width` wide,
    and a note naming what was lost ("" when nothing was)."""
    flexible = set(wrap) | set(shrink)
    keep = list(range(len(headers)))
    dropped: list[str] = []
    candidates = [headers.index(name) for name in drop if name in headers]
    while True:
        natural = _natural([headers[i] for i in keep], [[row[i] for i in keep] for row in cells])
        limits = _narrowed([headers[i] for i in keep], natural, width, flexible)
        victim = next((i for i in candidates if i in keep), None)
        if limits is not None or victim is None:
            break
        keep.remove(victim)  # the next column named in `drop`
        dropped.append(headers[victim])
    if limits is None:  # as narrow as the caller allows, still wider than `width`: so be it
        limits = [min(w, _floor(headers[i])) if headers[i] in flexible else w for i, w in zip(keep, natural)]
    shortened: list[str] = []
    out_cells = []
    for row in cells:
        out_row = []
        for column, i in enumerate(keep):
            cell, limit = row[i], limits[column]
            if len(cell) > limit and headers[i] in wrap:
                cell = "\n".join(textwrap.wrap(cell, limit, break_on_hyphens=False)) or cell
            elif len(cell) > limit:
                cell = cell[: max(limit - 1, 0)].rstrip() + ELLIPSIS
                if headers[i] not in shortened:
                    shortened.append(headers[i])
            out_row.append(cell)
        out_cells.append(out_row)
    parts = []
    if shortened:
        parts.append(f"{_names(shortened)} shortened")
    if dropped:
        parts.append(f"{_names(dropped)} left out")
    note = f"to fit {width} columns: " + ", ".join(parts) if parts else ""
    return [headers[i] for i in keep], out_cells, note


def _names(headers: Sequence[str]) -> str:
    names = [h or "text" for h in headers]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _floor(header: str) -> int:
    return max(MIN_SHRUNK, len(header))


def _narrowed(headers: Sequence[str], natural: Sequence[int], width: int, flexible: set[str]) -> list[int] | None:
    """Column widths with the flexible columns narrowed, widest first, so that the table fits
    `width` (none below MIN_SHRUNK or its header); None when that cannot fit."""
    widths = list(natural)
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    if excess <= 0:
        return widths
    columns = [i for i, h in enumerate(headers) if h in flexible]
    floors = {i: min(widths[i], _floor(headers[i])) for i in columns}
    allowed = sum(widths[i] for i in columns) - excess  # what the flexible columns may take

    def cut(level: int) -> dict[int, int]:  # every flexible column at most `level` wide
        return {i: max(floors[i], min(widths[i], level)) for i in columns}

    if not columns or sum(floors.values()) > allowed:
        return None
    level = max(widths[i] for i in columns)
    while sum(cut(level).values()) > allowed:
        level -= 1
    for i, w in cut(level).items():
        widths[i] = w
    return widths


def _aligned(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest line; a cell with line breaks (a wrapped cell) continues on
    the following lines with the other columns blank."""
    split = [[cell.split("\n") for cell in row] for row in cells]
    widths = [len(h) for h in headers]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max([widths[i]] + [len(line) for line in lines])

    def line(values: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    numeric_columns = [
        all(_looks_numeric(row[i]) for row in cells) if cells else False for i in range(len(headers))
    ]
    out = [line(headers, numeric_columns), line(["-" * w for w in widths], numeric_columns)]
    for row in split:
        for k in range(max((len(lines) for lines in row), default=1)):
            out.append(line([lines[k] if k < len(lines) else "" for lines in row], numeric_columns))
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
