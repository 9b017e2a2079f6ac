"""JSON helpers every layer may use: einsim's objects as plain JSON values.

Bottom layer (no einsim imports): the simulator's Estimate, the CLI's --json output and the
benchmarks' files all convert through `to_jsonable`, so one object prints one way.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, TextIO


def to_jsonable(value: Any) -> Any:
    """Dataclasses (through their own `to_dict` when they have one, as Problem does), tuples,
    sets, paths and numpy scalars/arrays to plain JSON types."""
    if callable(getattr(value, "to_dict", None)) and not isinstance(value, type):
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if callable(getattr(value, "tolist", None)):  # numpy scalar or array
        return value.tolist()
    return value


def finite_json(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """A plain JSON value with every NaN and infinity replaced by None (JSON has neither: Python
    would write the invalid tokens NaN and Infinity), and the paths (`rows[3].ms`) it replaced."""
    replaced: list[str] = []

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            replaced.append(where or "(the value)")
            return None
        if isinstance(item, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        return item

    return walk(to_jsonable(value), path), replaced


def dump_json(value: Any, stream: TextIO, indent: int | None = 2) -> list[str]:
    """`value` as valid JSON text on `stream`, followed by a newline; NaN and infinities are
    written as null and their paths returned (the caller says so where a person will read it)."""
    clean, replaced = finite_json(value)
    json.dump(clean, stream, indent=indent, sort_keys=False, allow_nan=False)
    stream.write("\n")
    return replaced
