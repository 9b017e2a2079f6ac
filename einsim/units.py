"""Quantities with explicit units in target YAML ('3.35 TB/s', '228 KiB', '1.98 GHz', '0.5 pJ/B'),
parsed once into SI base values (bytes, bytes/s, Hz, joules, ops/s).

Decimal prefixes are powers of 1000 (k, M, G, T, P) and binary prefixes powers of 1024 (Ki, Mi,
Gi, Ti), so '3.35 TB/s' is 3.35e12 B/s and '228 KiB' is 233472 B. Bits ('b', 'bit') are 1/8 byte.
Every parser raises ValueError with a short reason; the target loader turns that into a SpecError
naming the file and the field path.
"""

from __future__ import annotations

import math
import re

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_SMALL = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([^\s\d].*?)?\s*$")

# kind -> (what the error says is expected, example)
KINDS = {
    "bytes": ("a positive size", "'228 KiB'"),
    "bandwidth": ("a positive bandwidth", "'3.35 TB/s'"),
    "frequency": ("a positive frequency", "'1.98 GHz'"),
    "energy": ("a non-negative energy per operation", "'0.5 pJ'"),
    "energy_per_byte": ("a non-negative energy per byte, bit or word", "'0.5 pJ/B'"),
    "throughput": ("a positive throughput", "'989 TFLOP/s'"),
    "time": ("a non-negative time", "'5 us'"),
}


def _split(text: object) -> tuple[float, str]:
    if isinstance(text, bool):
        raise ValueError("not a quantity")
    if isinstance(text, (int, float)):
        try:
            value = float(text)
        except OverflowError:  # an int past 1.8e308
            raise ValueError("too large") from None
        if not math.isfinite(value):
            raise ValueError("not finite")
        return value, ""
    if not isinstance(text, str):
        raise ValueError("not a quantity")
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError("not a number with a unit")
    value = float(match.group(1))
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value, (match.group(2) or "").strip()


def _finite(value: float) -> float:
    """The parsed quantity, refused when its unit scaled it past the largest float ('1e300 GiB')."""
    if not math.isfinite(value):
        raise ValueError("too large")
    return value


def _scale_bytes(unit: str) -> float:
    """'KiB' -> 1024, 'MB' -> 1e6, 'Gb' -> 1e9/8, 'B' -> 1; raises on anything else."""
    for suffix, per in (("bytes", 1.0), ("byte", 1.0), ("bits", 0.125), ("bit", 0.125), ("B", 1.0), ("b", 0.125)):
        if unit.endswith(suffix):
            prefix = unit[: -len(suffix)]
            if prefix in _BINARY:
                return _BINARY[prefix] * per
            if prefix in _DECIMAL:
                return _DECIMAL[prefix] * per
    raise ValueError(f"unknown unit {unit!r}")


def parse_bytes(text: object) -> float:
    """'228 KiB' -> 233472.0; a bare number is bytes."""
    value, unit = _split(text)
    scale = 1.0 if unit == "" else _scale_bytes(unit)
    return _finite(value * scale)


def parse_bandwidth(text: object) -> float:
    """'3.35 TB/s' -> 3.35e12 (bytes per second); 'GiB/s', 'Gb/s' and 'B/cycle' are not accepted
    here without a clock (use bytes per second)."""
    value, unit = _split(text)
    if not unit.endswith("/s"):
        raise ValueError(f"unknown unit {unit!r} (expected bytes per second, e.g. TB/s or GiB/s)")
    return _finite(value * _scale_bytes(unit[:-2]))


def parse_frequency(text: object) -> float:
    """'1.98 GHz' -> 1.98e9."""
    value, unit = _split(text)
    if not unit.endswith("Hz"):
        raise ValueError(f"unknown unit {unit!r} (expected Hz, MHz or GHz)")
    prefix = unit[:-2]
    if prefix not in _DECIMAL:
        raise ValueError(f"unknown unit {unit!r}")
    return _finite(value * _DECIMAL[prefix])


def _scale_joules(unit: str) -> float:
    if not unit.endswith("J"):
        raise ValueError(f"unknown unit {unit!r} (expected pJ, nJ, ...)")
    prefix = unit[:-1]
    if prefix not in _SMALL:
        raise ValueError(f"unknown unit {unit!r}")
    return _SMALL[prefix]


def parse_energy(text: object) -> float:
    """Energy of one operation: '0.5 pJ', '0.5 pJ/op', '0.5 pJ/MAC', '0.5 pJ/exp' -> joules."""
    value, unit = _split(text)
    head, _, per = unit.partition("/")
    if per not in ("", "op", "MAC", "mac", "FLOP", "flop", "exp"):
        raise ValueError(f"unknown unit {unit!r} (expected pJ or pJ/op)")
    return _finite(value * _scale_joules(head))


def parse_energy_per_byte(text: object, word_bytes: float | None = None) -> float:
    """Energy per byte moved: '0.5 pJ/B', '4 pJ/bit', '2 pJ/word' (needs word_bytes) -> J/B."""
    value, unit = _split(text)
    head, slash, per = unit.partition("/")
    if not slash:
        raise ValueError(f"unknown unit {unit!r} (expected pJ/B, pJ/bit or pJ/word)")
    joules = value * _scale_joules(head)
    if per == "word":
        if not word_bytes:
            raise ValueError("pJ/word needs the target's word_size")
        return _finite(joules / word_bytes)
    if per in ("B", "byte"):
        return _finite(joules)
    if per in ("b", "bit"):
        return _finite(joules * 8.0)
    raise ValueError(f"unknown unit {unit!r} (expected pJ/B, pJ/bit or pJ/word)")


def parse_throughput(text: object) -> float:
    """Operations per second: '989 TFLOP/s', '494 TMAC/s', '3.9 Tops/s' -> ops/s (FLOP counts
    a MAC as 2, so '989 TFLOP/s' is 4.945e14 MAC/s: the caller converts)."""
    value, unit = _split(text)
    match = re.fullmatch(r"([kKMGTP]?)(FLOP|FLOPS|flop|op|ops|OP|OPS|MAC|MACs|exp)/s", unit)
    if not match:
        raise ValueError(f"unknown unit {unit!r} (expected e.g. TFLOP/s, TMAC/s, Gop/s)")
    return _finite(value * _DECIMAL[match.group(1)])


def throughput_unit(text: str) -> str:
    """'989 TFLOP/s' -> 'FLOP', '4 TMAC/s' -> 'MAC', '3 Gop/s' -> 'op' (after parse_throughput)."""
    _, unit = _split(text)
    base = re.sub(r"^[kKMGTP]?", "", unit[:-2])
    return {"FLOPS": "FLOP", "flop": "FLOP", "ops": "op", "OP": "op", "OPS": "op", "MACs": "MAC"}.get(base, base)


def parse_time(text: object) -> float:
    """'5 us' -> 5e-6 seconds."""
    value, unit = _split(text)
    if not unit.endswith("s") or unit[:-1] not in _SMALL:
        raise ValueError(f"unknown unit {unit!r} (expected s, ms, us or ns)")
    return _finite(value * _SMALL[unit[:-1]])


_PARSERS = {
    "bytes": parse_bytes,
    "bandwidth": parse_bandwidth,
    "frequency": parse_frequency,
    "energy": parse_energy,
    "throughput": parse_throughput,
    "time": parse_time,
}


def parse_quantity(text: object, kind: str | None = None) -> float:
    """Parse with the parser for `kind`; without a kind, guess it from the unit ('3.35 TB/s' ->
    bandwidth, '1.98 GHz' -> frequency, '228 KiB' -> bytes, '0.5 pJ/B' -> energy per byte)."""
    if kind == "energy_per_byte":
        return parse_energy_per_byte(text)
    if kind is not None:
        return _PARSERS[kind](text)
    _, unit = _split(text)
    if unit.endswith("Hz"):
        return parse_frequency(text)
    if "J" in unit:
        return parse_energy_per_byte(text) if "/" in unit and unit.split("/")[1] in ("B", "byte", "b", "bit") else parse_energy(text)
    if unit.endswith("/s"):
        try:
            return parse_bandwidth(text)
        except ValueError:
            return parse_throughput(text)
    if unit.endswith("s") and unit[:-1] in _SMALL:
        return parse_time(text)
    return parse_bytes(text)


def format_bytes(value: float) -> str:
    """233472 -> '228 KiB' (binary prefixes for capacities)."""
    for unit, scale in (("TiB", 2.0**40), ("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if value >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value:.4g} B"


def format_rate(value: float, unit: str) -> str:
    """3.35e12, 'B/s' -> '3.35 TB/s' (decimal prefixes for rates)."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"
