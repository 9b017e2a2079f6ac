"""einsim's kernels as PyTorch operators (`torch.ops.einsim.*`): each launcher defined with
`torch.library.Library.define` (a schema), its implementation registered for the CUDA and CPU
dispatch keys, a fake (meta) implementation for tracing and, for the fused forward, a registered
autograd formula, so `torch.compile(fullgraph=True)` sees one opaque node per kernel (no graph
break) and CUDA graphs (`mode="reduce-overhead"`, or a manual capture) record the launches.
docs/kernels.md § PyTorch operators.

Why not `torch.library.custom_op`: its Python layers (an autograd wrapper for every operator,
the aliasing check of the outputs, dynamo's disable wrapper) cost about 45 us per call on the
H200's host (W3: decode 79.7 us through the operator, 31.2 us direct), and compiled graphs and
eager users of `torch.ops.einsim.*` pay them on every call. A schema with backend kernels is one
dispatcher hop (a few us); operators without an autograd formula take PyTorch's C++ autograd
fallback.

Operators take plain schema types: tensors, bool, int lists, float, and a kernel config as its
JSON text (`config_json`), decoded once per distinct text. Importing this module imports torch
(not triton: the real implementations import their launchers on first call).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence

import torch

from einsim.kernels.registry import get_kernel

NAMESPACE = "einsim"
_LIBRARY = torch.library.Library(NAMESPACE, "FRAGMENT")
BACKENDS = ("CPU", "CUDA")  # CPU: Triton's interpreter (TRITON_INTERPRET=1)

_is_compiling = torch.compiler.is_compiling


def traced(tensor) -> bool:
    """Should a front door call its operator instead of its launch plan? Yes under torch.compile
    or export (the compiler must see one opaque node) and for tensor subclasses (fake,
    functional tensors); no for eager calls on plain tensors, which skip the dispatcher."""
    return _is_compiling() or type(tensor) is not torch.Tensor


@torch.compiler.assume_constant_result
def config_json(config) -> str | None:
    """A kernel config as the text an operator takes (None stays None: tuned or default).
    A constant for the compiler: configs are frozen dataclasses, their text never changes."""
    if config is None:
        return None
    if isinstance(config, str):
        return config
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


@functools.lru_cache(maxsize=256)
def _config(kernel: str, text: str | None):
    if text is None:
        return None
    return get_kernel(kernel).config_from_dict(json.loads(text))


def _window(window: Sequence[int] | None):
    return None if window is None else (int(window[0]), int(window[1]))


def define(name: str, schema: str, impl: Callable, fake: Callable) -> torch._ops.OpOverload:
    """Define `torch.ops.einsim.<name>` with `schema` (its arguments and returns, as in
    `"(Tensor q, bool causal=False) -> (Tensor, Tensor)"`), `impl` for real tensors on the
    CPU and CUDA keys and `fake` for tracing; returns the operator's default overload (the
    cheapest to call)."""
    _LIBRARY.define(name + schema)
    for key in BACKENDS:
        _LIBRARY.impl(name, impl, key)
    torch.library.register_fake(f"{NAMESPACE}::{name}", fake, lib=_LIBRARY)
    return getattr(getattr(torch.ops, NAMESPACE), name).default


def _forward_fake(q, k, v, *_options):
    batch, heads, q_len, _ = q.shape
    return (q.new_empty((batch, heads, q_len, v.shape[-1])),
            q.new_empty((batch, heads, q_len), dtype=torch.float32))


_ATTENTION = ("(Tensor q, Tensor k, Tensor v, bool causal=False, int[]? window=None, "
              "float? scale=None, str? config_json=None")
_RUNNERS: dict[str, Callable] = {}


def _runner(name: str) -> Callable:
    """The launcher behind an operator, imported on its first call (kernels import triton)."""
    run = _RUNNERS.get(name)
    if run is None:
        if name == "attention_forward":
            from einsim.kernels.flash.forward import flash_forward as run
        elif name == "attention_backward":
            from einsim.kernels.flash.backward import flash_backward as run
        elif name == "decode":
            from einsim.kernels.decode.forward import decode_attention as run
        elif name == "decode_paged":
            from einsim.kernels.decode.forward import decode_paged as run
        elif name == "attention_2pass":
            from einsim.kernels.multipass.forward import attention_2pass as run
        else:
            from einsim.kernels.multipass.forward import attention_3pass as run
        _RUNNERS[name] = run
    return run


# -- the fused forward and its backward ---------------------------------------------------------
def _attention_forward(q, k, v, causal=False, window=None, scale=None, config_json=None,
                       backward_config_json=None):
    """(out, lse) of the fused 1-pass forward (`attention-fwd`); differentiable in q, k, v."""
    return _runner("attention_forward")(q, k, v, causal=causal, window=_window(window), scale=scale,
                                        config=_config("attention-fwd", config_json))


attention_forward = define("attention_forward", _ATTENTION + ", str? backward_config_json=None)"
                           " -> (Tensor, Tensor)", _attention_forward, _forward_fake)


def _attention_backward(grad_out, q, k, v, out, lse, causal=False, window=None, scale=None,
                        config_json=None):
    """(dq, dk, dv) of `attention_forward` given its out, lse and dL/dout (`attention-bwd`)."""
    return _runner("attention_backward")(grad_out.contiguous(), q, k, v, out, lse, causal=causal,
                                         window=_window(window), scale=scale,
                                         config=_config("attention-bwd", config_json))


def _backward_fake(grad_out, q, k, v, *_rest):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


attention_backward = define(
    "attention_backward", "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
    "bool causal=False, int[]? window=None, float? scale=None, str? config_json=None) "
    "-> (Tensor, Tensor, Tensor)", _attention_backward, _backward_fake)


def _setup_forward(ctx, inputs, output) -> None:
    q, k, v, causal, window, scale, _, backward_config = (tuple(inputs) + (None,) * 8)[:8]
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.options = (bool(causal), window, scale, backward_config)
    ctx.mark_non_differentiable(lse)


def _backward_forward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    causal, window, scale, backward_config = ctx.options
    dq, dk, dv = attention_backward(grad_out, q, k, v, out, lse, causal, window, scale,
                                    backward_config)
    return dq, dk, dv, None, None, None, None, None


torch.library.register_autograd(f"{NAMESPACE}::attention_forward", _backward_forward,
                                setup_context=_setup_forward, lib=_LIBRARY)


# -- multi-pass forwards and split-KV decode (forward only) --------------------------------------
def _forward_only(name: str, kernel: str):
    def impl(q, k, v, causal=False, window=None, scale=None, config_json=None):
        return _runner(name)(q, k, v, causal=causal, window=_window(window), scale=scale,
                             config=_config(kernel, config_json))

    impl.__doc__ = f"(out, lse) of `{kernel}` (forward only)."
    return define(name, _ATTENTION + ") -> (Tensor, Tensor)", impl, _forward_fake)


decode = _forward_only("decode", "decode")
attention_2pass = _forward_only("attention_2pass", "attention-2pass-fwd")
attention_3pass = _forward_only("attention_3pass", "attention-3pass-fwd")


def _decode_paged(q, k_cache, v_cache, cache_seqlens, block_table=None, causal=False, scale=None,
                  config_json=None):
    """(out, lse) of serving decode (`decode-paged`): per-sequence lengths, paged cache."""
    return _runner("decode_paged")(q, k_cache, v_cache, cache_seqlens, block_table, causal=causal,
                                   scale=scale, config=_config("decode-paged", config_json))


decode_paged = define(
    "decode_paged", "(Tensor q, Tensor k_cache, Tensor v_cache, Tensor cache_seqlens, "
    "Tensor? block_table=None, bool causal=False, float? scale=None, str? config_json=None) "
    "-> (Tensor, Tensor)", _decode_paged, _forward_fake)


__all__ = ["attention_2pass", "attention_3pass", "attention_backward", "attention_forward",
           "config_json", "decode", "decode_paged", "define", "traced"]
