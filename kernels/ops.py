"""einsim's kernels as PyTorch operators (`torch.ops.einsim.*`): each launcher registered with
`torch.library.custom_op`, with a fake (meta) implementation for tracing and, for the fused
forward, a registered autograd formula, so `torch.compile(fullgraph=True)` sees one opaque node
per kernel (no graph break) and CUDA graphs (`mode="reduce-overhead"`, or a manual capture)
record the launches. docs/kernels.md § PyTorch operators.

Operators take plain schema types: tensors, bool, int lists, float, and a kernel config as its
JSON text (`config_json`), decoded once per distinct text. Importing this module imports torch
(not triton: the real implementations import their launchers on first call).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence

import torch
from torch.library import custom_op

from einsim.kernels.registry import get_kernel

NAMESPACE = "einsim"


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


def _out_shapes(q, v):
    batch, heads, q_len, _ = q.shape
    return (batch, heads, q_len, v.shape[-1]), (batch, heads, q_len)


# -- the fused forward and its backward ---------------------------------------------------------
@custom_op(f"{NAMESPACE}::attention_forward", mutates_args=())
def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                      window: Sequence[int] | None = None, scale: float | None = None,
                      config_json: str | None = None,
                      backward_config_json: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of the fused 1-pass forward (`attention-fwd`); differentiable in q, k, v."""
    from einsim.kernels.flash.forward import flash_forward

    return flash_forward(q, k, v, causal=causal, window=_window(window), scale=scale,
                         config=_config("attention-fwd", config_json))


@attention_forward.register_fake
def _(q, k, v, causal=False, window=None, scale=None, config_json=None, backward_config_json=None):
    out_shape, lse_shape = _out_shapes(q, v)
    return q.new_empty(out_shape), q.new_empty(lse_shape, dtype=torch.float32)


@custom_op(f"{NAMESPACE}::attention_backward", mutates_args=())
def attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                       causal: bool = False, window: Sequence[int] | None = None,
                       scale: float | None = None, config_json: str | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of `attention_forward` given its out, lse and dL/dout (`attention-bwd`)."""
    from einsim.kernels.flash.backward import flash_backward

    return flash_backward(grad_out.contiguous(), q, k, v, out, lse, causal=causal,
                          window=_window(window), scale=scale,
                          config=_config("attention-bwd", config_json))


@attention_backward.register_fake
def _(grad_out, q, k, v, out, lse, causal=False, window=None, scale=None, config_json=None):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format))


def _setup_forward(ctx, inputs, output) -> None:
    q, k, v, causal, window, scale, _, backward_config = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.options = (causal, window, scale, backward_config)
    ctx.mark_non_differentiable(lse)


def _backward_forward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    causal, window, scale, backward_config = ctx.options
    dq, dk, dv = attention_backward(grad_out, q, k, v, out, lse, causal, window, scale,
                                    backward_config)
    return dq, dk, dv, None, None, None, None, None


attention_forward.register_autograd(_backward_forward, setup_context=_setup_forward)


# -- multi-pass forwards and split-KV decode (forward only) --------------------------------------
def _register_forward_only(name: str, kernel: str, run):
    @custom_op(f"{NAMESPACE}::{name}", mutates_args=())
    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
           window: Sequence[int] | None = None, scale: float | None = None,
           config_json: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return run(q, k, v, causal=causal, window=_window(window), scale=scale,
                   config=_config(kernel, config_json))

    @op.register_fake
    def _(q, k, v, causal=False, window=None, scale=None, config_json=None):
        out_shape, lse_shape = _out_shapes(q, v)
        return q.new_empty(out_shape), q.new_empty(lse_shape, dtype=torch.float32)

    op.__doc__ = f"(out, lse) of `{kernel}` (forward only)."
    return op


def _decode(q, k, v, **options):
    from einsim.kernels.decode.forward import decode_attention

    return decode_attention(q, k, v, **options)


def _two_pass(q, k, v, **options):
    from einsim.kernels.multipass.forward import attention_2pass

    return attention_2pass(q, k, v, **options)


def _three_pass(q, k, v, **options):
    from einsim.kernels.multipass.forward import attention_3pass

    return attention_3pass(q, k, v, **options)


decode = _register_forward_only("decode", "decode", _decode)
attention_2pass = _register_forward_only("attention_2pass", "attention-2pass-fwd", _two_pass)
attention_3pass = _register_forward_only("attention_3pass", "attention-3pass-fwd", _three_pass)

@custom_op(f"{NAMESPACE}::decode_paged", mutates_args=())
def decode_paged(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 cache_seqlens: torch.Tensor, block_table: torch.Tensor | None = None,
                 causal: bool = False, scale: float | None = None,
                 config_json: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of serving decode (`decode-paged`): per-sequence lengths, paged cache."""
    from einsim.kernels.decode.forward import decode_paged as run

    return run(q, k_cache, v_cache, cache_seqlens, block_table, causal=causal, scale=scale,
               config=_config("decode-paged", config_json))


@decode_paged.register_fake
def _(q, k_cache, v_cache, cache_seqlens, block_table=None, causal=False, scale=None,
      config_json=None):
    out_shape, lse_shape = _out_shapes(q, v_cache)
    return q.new_empty(out_shape), q.new_empty(lse_shape, dtype=torch.float32)


__all__ = ["attention_2pass", "attention_3pass", "attention_backward", "attention_forward",
           "config_json", "decode", "decode_paged", "traced"]
