"""JSON helpers every layer may use: einsim's objects as plain JSON values.

Bottom layer (no einsim imports): the simulator's Estimate, the CLI's --json output and the
benchmarks' files all convert through `to_jsonable`, so one object prints one way.
"""

from __future__ import annotations

import dataclasses
import json
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


def dump_json(value: Any, stream: TextIO, indent: int | None = 2) -> None:
    """`value` as JSON text on `stream`, followed by a newline."""
    json.dump(to_jsonable(value), stream, indent=indent, sort_keys=False)
    stream.write("\n")
