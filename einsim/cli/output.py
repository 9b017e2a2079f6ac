"""Shared output for subcommands: JSON and CSV, so every command prints the same way (text tables
and numbers: einsim.text)."""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from einsim.errors import ConfigError, brief
from einsim.files import path_kind
from einsim.jsonio import dump_json, to_jsonable


def add_style_argument(parser: Any) -> None:
    """`--style screen|paper`: the figure's sizes (einsim.plots.style)."""
    parser.add_argument("--style", choices=("screen", "paper"), default="screen",
                        help="figure sizes: screen (default) or paper (one column of a two-column page per "
                        "panel, at most the text width, 6-8 pt text, PNG at 300 dpi)")


def add_wide_argument(parser: Any) -> None:
    """`--wide`: tables with every column, at full width (by default einsim fits its tables and
    prose to einsim.text.TABLE_WIDTH = 100 columns and says what it shortened)."""
    parser.add_argument("--wide", action="store_true",
                        help="print tables with every column at full width (default: fit 100 columns, "
                        "shortening long text and leaving out minor columns, with a note saying which)")


def print_json(value: Any, stream: TextIO | None = None) -> None:
    """`value` as valid JSON on stdout; NaN and infinities become null, with a note on stderr."""
    replaced = dump_json(value, stream or sys.stdout)
    if replaced:
        shown = ", ".join(replaced[:5]) + (f" and {len(replaced) - 5} more" if len(replaced) > 5 else "")
        print(f"note: {len(replaced)} value(s) were NaN or infinite and are written as null: {shown}", file=sys.stderr)


# Arguments naming a file a command writes ("-" is stdout): checked before any work is done.
OUTPUT_OPTIONS = {"out": "--out", "csv": "--csv", "output": "--output"}


def check_output_file(path: str | Path, option: str) -> None:
    """Fail at once, not after minutes of work, when `path` cannot be written: its folder does
    not exist, or it is a folder itself."""
    target = Path(path)
    kind = path_kind(target)
    if kind == "folder":
        raise ConfigError(f"{option} {brief(str(path))}: is a folder; give a file name")
    if kind == "unusable":
        raise ConfigError(f"{option} {brief(str(path))}: not a usable file name (too long, or a character the "
                          f"file system refuses)")
    folder = target.parent
    if path_kind(folder) != "folder":
        raise ConfigError(f"{option} {brief(str(path))}: the folder {brief(str(folder))} does not exist; "
                          f"create it or write elsewhere")


def check_output_arguments(args: Any) -> None:
    """check_output_file for every output option a subcommand was given."""
    for attr, option in OUTPUT_OPTIONS.items():
        value = getattr(args, attr, None)
        if isinstance(value, (str, Path)) and str(value) not in ("", "-"):
            check_output_file(value, option)


def write_csv(rows: Sequence[dict[str, Any]], destination: str | Path | TextIO) -> None:
    """Rows of dicts to CSV; the header is the union of keys in first-seen order."""
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers]
    if isinstance(destination, (str, Path)):
        check_output_file(destination, "CSV file")
        try:
            with open(destination, "w", newline="") as handle:
                _write_rows(handle, headers, rows)
        except OSError as error:
            raise ConfigError(f"{brief(str(destination))}: cannot write: {error.strerror or error}") from None
    else:
        _write_rows(destination, headers, rows)


def _write_rows(handle: TextIO | io.StringIO, headers: list[str], rows: Sequence[dict[str, Any]]) -> None:
    writer = csv.DictWriter(handle, fieldnames=headers)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: to_jsonable(v) for k, v in row.items()})


def safe_file_stem(name: str) -> str:
    """A name from user data (a cascade's `name:`) made a plain file name: no folders, no leading
    dots, only letters, digits, '.', '_' and '-'; at most 100 characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")[:100]
    return stem or "cascade"
