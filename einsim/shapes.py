"""The one shape grammar: `B,H,N,D` (or `B,H,Nq,Nk,D`), sizes with `k`/`M` suffixes, windows
`L[,R]`, length lists `1k,4k,16k`. Plain Python, bottom layer: the CLI's argparse glue
(einsim/cli/problem_args.py) and anyone else parse through these functions only.
"""

from __future__ import annotations

import re

from einsim.errors import ShapeError, brief
from einsim.problem import Problem

_SUFFIXES = {"k": 1024, "K": 1024, "m": 1024 * 1024, "M": 1024 * 1024}
_SEPARATORS = re.compile(r"[,x\s]+")


def parse_size(text: str | int, option: str = "size", *, allow_zero: bool = False) -> int:
    """'4096' -> 4096, '4k' -> 4096, '1M' -> 1048576 (binary suffixes, as sequence lengths are
    quoted). ShapeError naming `option` for anything else, zero (unless allowed) or a negative."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        body = str(text).strip()
        scale = _SUFFIXES.get(body[-1:], 1)
        if scale != 1:
            body = body[:-1]
        try:
            value = int(body) * scale
        except ValueError:
            value = -1
    if value < 0 or (value == 0 and not allow_zero):
        wanted = "a non-negative integer" if allow_zero else "a positive integer"
        raise ShapeError(f"{option}: expected {wanted} such as 4096 or 4k, got {brief(text)}")
    return value


def parse_lengths(text: str | list[str] | tuple[str, ...], option: str = "--seq-lens") -> list[int]:
    """'1k,4k,16k' -> [1024, 4096, 16384]: the sequence lengths of a sweep, a plot or a benchmark.
    Commas or spaces separate; a list of such strings (an option given `nargs`) is read as one."""
    joined = ",".join(map(str, text)) if isinstance(text, (list, tuple)) else str(text)
    parts = [part for part in re.split(r"[,\s]+", joined) if part]
    if not parts:
        raise ShapeError(f"{option}: expected comma-separated positive lengths such as 1k,4k,16k, got {brief(text)}")
    return [parse_size(part, option) for part in parts]


def parse_window(text: str | None, option: str = "--window") -> tuple[int, int] | None:
    """'4096' -> (4096, 0) (a causal sliding window: itself and 4096 keys back); '128,128' ->
    (128, 128) (left, right); None, '' or 'none' -> None."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    parts = [p for p in re.split(r"[,\s]+", str(text).strip()) if p]
    if len(parts) not in (1, 2):
        raise ShapeError(f"{option}: expected LEFT or LEFT,RIGHT (non-negative integers), got {brief(text)}")
    values = [parse_size(p, option, allow_zero=True) for p in parts]
    return (values[0], values[1] if len(values) == 2 else 0)


def parse_shape(text: str, *, kv_heads: int | None = None, q_len: int | None = None,
                causal: bool = False, window: tuple[int, int] | None = None, dtype: str = "bf16",
                decode: bool = False, option: str = "--shape") -> Problem:
    """'B,H,N,D' -> Problem: N keys, and N queries too unless `q_len` is given or `decode` (then
    one query against an N-long cache). 'B,H,Nq,Nk,D' names both lengths. 'x' also separates;
    sizes take k/M suffixes ('16,32,4k,128')."""
    parts = [p for p in _SEPARATORS.split(str(text).strip()) if p]
    if len(parts) not in (4, 5):
        raise ShapeError(f"{option}: expected B,H,N,D (batch, query heads, sequence length, head dim) "
                         f"or B,H,Nq,Nk,D, got {brief(text)}")
    sizes = [parse_size(p, option) for p in parts]
    if len(sizes) == 5:
        batch, heads, inline_q_len, kv_len, head_dim = sizes
        if q_len is not None and q_len != inline_q_len:
            raise ShapeError(f"{option} {text} names {inline_q_len} queries, --q-len {q_len}: give one")
        q_len = inline_q_len
    else:
        batch, heads, kv_len, head_dim = sizes
    if q_len is None:
        q_len = 1 if decode else kv_len
    return Problem(batch=batch, q_heads=heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len,
                   head_dim=head_dim, causal=causal, window=window, dtype=dtype,
                   name=f"shape {','.join(str(s) for s in sizes)}")
