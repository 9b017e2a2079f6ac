"""Attention problems from the command line: `--shape B,H,N,D` with --kv-heads/--causal/--window/--q-len, or
`--model NAME --seq-len N [--mode decode] [--batch B]`; shared by every subcommand that takes one."""

from __future__ import annotations

import argparse
import re

from einsim.errors import ShapeError
from einsim.problem import Problem


def parse_shape(
    text: str,
    kv_heads: int | None = None,
    causal: bool = False,
    window: tuple[int, int] | None = None,
    q_len: int | None = None,
    dtype: str = "bf16",
) -> Problem:
    """'B,H,N,D' (N = keys; queries too unless q_len is given; D = head dim) -> Problem.
    Also accepts 'x' as separator and k/K suffixes ('16,32,4k,128')."""
    parts = [p for p in re.split(r"[,x\s]+", str(text).strip()) if p]
    if len(parts) != 4:
        raise ShapeError(f"--shape expects B,H,N,D (batch, heads, sequence length, head dim), got {text!r}")
    try:
        batch, heads, seq_len, head_dim = (_integer(p) for p in parts)
    except ValueError:
        raise ShapeError(f"--shape expects four positive integers B,H,N,D, got {text!r}") from None
    return Problem(
        batch=batch,
        q_heads=heads,
        kv_heads=kv_heads,
        q_len=seq_len if q_len is None else q_len,
        kv_len=seq_len,
        head_dim=head_dim,
        causal=causal,
        window=window,
        dtype=dtype,
        name=f"shape {batch},{heads},{seq_len},{head_dim}",
    )


def parse_window(text: str | None) -> tuple[int, int] | None:
    """'4096' -> (4096, 0) (a causal sliding window: itself and 4096 keys back); '128,128' ->
    (128, 128) (left, right); None or 'none' -> None."""
    if text is None or str(text).lower() in ("", "none"):
        return None
    parts = [p for p in re.split(r"[,\s]+", str(text).strip()) if p]
    try:
        values = [_integer(p, allow_zero=True) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        return (values[0], 0)
    if len(values) == 2:
        return (values[0], values[1])
    raise ShapeError(f"--window expects LEFT or LEFT,RIGHT (non-negative integers), got {text!r}")


def parse_lengths(text: str, option: str = "--seq-lens") -> list[int]:
    """'1k,4k,16k' -> [1024, 4096, 16384]: the sequence lengths of a sweep or a plot."""
    try:
        values = [_integer(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise ShapeError(f"{option}: expected comma-separated positive lengths such as 1k,4k,16k, got {text!r}")
    return values


def _integer(text: str, allow_zero: bool = False) -> int:
    text = text.strip()
    scale = 1
    if text[-1:] in ("k", "K"):
        scale, text = 1024, text[:-1]
    elif text[-1:] in ("m", "M"):
        scale, text = 1024 * 1024, text[:-1]
    value = int(text) * scale
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(text)
    return value


def add_problem_arguments(parser: argparse.ArgumentParser) -> None:
    """--model/--seq-len/--mode/--batch or --shape with --kv-heads/--causal/--window/--q-len."""
    group = parser.add_argument_group("workload (a model preset, or an explicit shape)")
    group.add_argument("--model", help="model preset (einsim models list)")
    group.add_argument("--seq-len", type=_positive_length, help="sequence length (KV length in decode), e.g. 4096 or 4k")
    group.add_argument("--mode", choices=("prefill", "decode"), default="prefill", help="prefill: N queries; decode: 1 query (default prefill)")
    group.add_argument("--batch", type=_positive_length, help="override the preset's batch")
    group.add_argument("--shape", help="B,H,N,D: batch, query heads, sequence length, head dim")
    group.add_argument("--kv-heads", type=_positive_length, help="key/value heads for GQA (divides H)")
    group.add_argument("--causal", action="store_true", help="causal mask (bottom-right aligned)")
    group.add_argument("--window", help="sliding window: LEFT or LEFT,RIGHT")
    group.add_argument("--q-len", type=_positive_length, help="query length with --shape (default N; 1 for decode)")


def problem_from_args(args: argparse.Namespace, default_model: str | None = None, default_seq_len: int = 4096) -> Problem:
    """The Problem the arguments of add_problem_arguments describe (ShapeError on conflicts)."""
    shape = getattr(args, "shape", None)
    model = getattr(args, "model", None)
    if shape and model:
        raise ShapeError("give either --model (with --seq-len) or --shape, not both")
    window = parse_window(getattr(args, "window", None))
    if shape:
        q_len = getattr(args, "q_len", None)
        if q_len is None and getattr(args, "mode", "prefill") == "decode":
            q_len = 1
        return parse_shape(shape, kv_heads=getattr(args, "kv_heads", None), causal=bool(getattr(args, "causal", False)), window=window, q_len=q_len)
    from einsim.simulator.models import load_model

    name = model or default_model
    if name is None:
        raise ShapeError("a workload is needed: --model NAME --seq-len N, or --shape B,H,N,D")
    problem = load_model(name).problem(getattr(args, "seq_len", None) or default_seq_len, getattr(args, "mode", "prefill"), getattr(args, "batch", None))
    overrides = {}
    if getattr(args, "kv_heads", None):
        overrides["kv_heads"] = args.kv_heads
    if getattr(args, "causal", False):
        overrides["causal"] = True
    if window is not None:
        overrides["window"] = window
    if overrides:
        from dataclasses import replace

        problem = replace(problem, **overrides)
    return problem


def _positive_length(text: str) -> int:
    try:
        return _integer(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (4096 or 4k), got {text!r}") from None
