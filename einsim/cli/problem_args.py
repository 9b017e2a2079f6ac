"""The command-line face of einsim.shapes: the options every subcommand that takes one attention
problem shares (`--model/--seq-len/--mode/--batch` or `--shape B,H,N,D`, with `--kv-heads`,
`--q-len`, `--causal`, `--window L[,R]`, `--dtype`, `--tensors` for the values a cascade's
filters read), turned into a Problem. Argparse lives here
only; the grammar itself is einsim.shapes.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from einsim.errors import ShapeError
from einsim.filter_inputs import DESCRIPTION_HELP, FilterInputs
from einsim.problem import DTYPE_BYTES, Problem
from einsim.shapes import parse_shape, parse_size, parse_window


def add_problem_arguments(parser: argparse.ArgumentParser) -> None:
    """--model/--seq-len/--mode/--batch or --shape, with --kv-heads/--q-len/--causal/--window/--dtype."""
    group = parser.add_argument_group("problem (a model preset, or an explicit shape)")
    group.add_argument("--model", help="model preset (einsim models list)")
    group.add_argument("--seq-len", type=_size_argument, help="sequence length (KV length in decode), e.g. 4096 or 4k")
    group.add_argument("--mode", choices=("prefill", "decode"), default="prefill",
                       help="prefill: N queries; decode: 1 query (default prefill)")
    group.add_argument("--batch", type=_size_argument, help="override the preset's batch")
    group.add_argument("--shape", help="B,H,N,D or B,H,Nq,Nk,D: batch, query heads, sequence length(s), "
                       "head dim; sizes take k/M suffixes (16,32,4k,128)")
    group.add_argument("--kv-heads", type=_size_argument, help="key/value heads for GQA (divides H)")
    group.add_argument("--q-len", type=_size_argument, help="query length (default N; 1 for decode)")
    group.add_argument("--causal", action="store_true", help="causal mask (bottom-right aligned)")
    group.add_argument("--window", help="sliding window: LEFT (a causal window of LEFT keys back) or LEFT,RIGHT")
    group.add_argument("--dtype", choices=tuple(DTYPE_BYTES),
                       help="element type (default: the model's, else bf16)")
    group.add_argument("--tensors", action="append", default=None, metavar="FILE.npz|DESCRIPTION",
                       help="the values of the tensors the cascade's filters read (packed-documents' DQ, DK; "
                            "block-sparse's BLOCKS), so the simulators price the tiles they empty: an .npz of "
                            f"arrays by name, or {DESCRIPTION_HELP}; repeatable")


def problem_from_args(args: argparse.Namespace, *, default_model: str | None = None,
                      default_shape: str | None = None, default_seq_len: int = 4096,
                      decode: bool = False) -> Problem:
    """The Problem the arguments of add_problem_arguments describe (ShapeError on conflicts).
    Neither --model nor --shape: `default_model` at `default_seq_len`, else `default_shape`.
    `decode`: the command runs a decode kernel, so B,H,N,D means one query against N keys."""
    problem = _problem(args, default_model, default_shape, default_seq_len, decode)
    tensors = _given(args, "tensors")
    return replace(problem, filter_inputs=FilterInputs.of(list(tensors))) if tensors else problem


def _problem(args: argparse.Namespace, default_model: str | None, default_shape: str | None,
             default_seq_len: int, decode: bool) -> Problem:
    shape, model = _given(args, "shape"), _given(args, "model")
    if shape and model:
        raise ShapeError("give either --model (with --seq-len) or --shape, not both")
    if not shape and not model and default_model is None:
        shape = default_shape
    decode = decode or _given(args, "mode") == "decode"
    window = parse_window(_given(args, "window"))
    if shape and not model:
        for option in ("seq_len", "batch"):
            if _given(args, option) is not None:
                raise ShapeError(f"--{option.replace('_', '-')} is for --model; --shape {shape} already "
                                 "gives batch and lengths")
        return parse_shape(shape, kv_heads=_given(args, "kv_heads"), q_len=_given(args, "q_len"),
                           causal=bool(_given(args, "causal")), window=window,
                           dtype=_given(args, "dtype") or "bf16", decode=decode)
    from einsim.simulator.models import load_model

    name = model or default_model
    if name is None:
        raise ShapeError("a problem is needed: --model NAME --seq-len N, or --shape B,H,N,D")
    problem = load_model(name).problem(_given(args, "seq_len") or default_seq_len,
                                       "decode" if decode else "prefill", _given(args, "batch"))
    overrides: dict[str, Any] = {}
    for option in ("kv_heads", "q_len", "dtype"):
        if _given(args, option) is not None:
            overrides[option] = _given(args, option)
    if _given(args, "causal"):
        overrides["causal"] = True
    if window is not None:
        overrides["window"] = window
    return replace(problem, **overrides) if overrides else problem


def kernel_problem_from_args(args: argparse.Namespace, *, default_shape: str | None = None,
                             decode: bool = False) -> Problem:
    """problem_from_args for a command that runs einsim's kernels: a dtype they cannot load is
    refused here, by name, before any search or launch."""
    from einsim.kernels.registry import KERNEL_DTYPES

    problem = problem_from_args(args, default_shape=default_shape, decode=decode)
    if problem.dtype not in KERNEL_DTYPES:
        raise ShapeError(f"--dtype {problem.dtype}: einsim's kernels take {' or '.join(KERNEL_DTYPES)}")
    return problem


def _given(args: argparse.Namespace, option: str) -> Any:
    return getattr(args, option, None)


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ShapeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (4096 or 4k), got {text!r}") from None
