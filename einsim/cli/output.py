"""Shared output for subcommands: JSON and CSV, so every command prints the same way (text tables
and numbers: einsim.text)."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from einsim.jsonio import dump_json, to_jsonable


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
