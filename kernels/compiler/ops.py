"""A compiled cascade as PyTorch operators: `torch.ops.einsim.cascade_<digest>_forward` and
`..._backward`, registered with torch.library.custom_op when first needed, with fake
implementations and registered autograd, so torch.compile(fullgraph=True) sees one opaque node
per call of a user's variant, as it does for the built-in kernels (kernels/ops.py).

Extra inputs travel as a tensor list in the cascade's input order, size symbols and configs as
JSON text (constant under compilation). Imports torch.
"""

from __future__ import annotations

import json

import torch
from torch.library import custom_op

from einsim.kernels.ops import NAMESPACE, config_json

_OPERATORS: dict[str, tuple] = {}


@torch.compiler.assume_constant_result
def symbols_json(symbols: dict) -> str | None:
    """Size symbols of a call as the text the operator takes (None: none given)."""
    return json.dumps(symbols, sort_keys=True) if symbols else None


def operators(compiled) -> tuple:
    """(forward, backward) operators of `compiled`, registered on first use."""
    digest = compiled.generated.digest
    if digest in _OPERATORS:
        return _OPERATORS[digest]
    stem = f"cascade_{digest}"
    names = compiled.extra_inputs

    def keywords(extras, symbols):
        found = dict(zip(names, extras))
        if symbols:
            found.update(json.loads(symbols))
        return found

    def configs(forward_json, backward_json):
        from einsim.kernels.compiler.registry import kernel_stem
        from einsim.kernels.ops import _config

        stem_name = kernel_stem(compiled)
        return (_config(f"{stem_name}-fwd", forward_json), _config(f"{stem_name}-bwd", backward_json))

    @custom_op(f"{NAMESPACE}::{stem}_forward", mutates_args=())
    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extras: list[torch.Tensor],
                symbols: str | None = None, scale: float | None = None,
                config_json: str | None = None,
                backward_config_json: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        config, backward_config = configs(config_json, backward_config_json)
        plan, ordered = compiled.plan(q, k, v, scale, keywords(extras, symbols), config,
                                      backward_config)
        return compiled.forward(plan, q, k, v, ordered)

    @forward.register_fake
    def _(q, k, v, extras, symbols=None, scale=None, config_json=None, backward_config_json=None):
        batch, heads, q_len, _ = q.shape
        return (q.new_empty((batch, heads, q_len, v.shape[-1])),
                q.new_empty((batch, heads, q_len), dtype=torch.float32))

    @custom_op(f"{NAMESPACE}::{stem}_backward", mutates_args=())
    def backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 out: torch.Tensor, lse: torch.Tensor, extras: list[torch.Tensor],
                 symbols: str | None = None, scale: float | None = None,
                 config_json: str | None = None, backward_config_json: str | None = None,
                 extra_grads: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        config, backward_config = configs(config_json, backward_config_json)
        plan, ordered = compiled.plan(q, k, v, scale, keywords(extras, symbols), config,
                                      backward_config)
        if not extra_grads:
            dq, dk, dv = compiled.backward(plan, grad_out, q, k, v, out, lse, ordered)
            return dq, dk, dv, []
        dq, dk, dv, grads = compiled.backward(plan, grad_out, q, k, v, out, lse, ordered,
                                              extra_grads=True)
        return dq, dk, dv, [grads[n] if n in grads else torch.zeros_like(t)
                            for n, t in zip(names, extras)]

    @backward.register_fake
    def _(grad_out, q, k, v, out, lse, extras, symbols=None, scale=None, config_json=None,
          backward_config_json=None, extra_grads=False):
        grads = [torch.empty_like(t) for t in extras] if extra_grads else []
        return (torch.empty_like(q, memory_format=torch.contiguous_format),
                torch.empty_like(k, memory_format=torch.contiguous_format),
                torch.empty_like(v, memory_format=torch.contiguous_format), grads)

    def setup(ctx, inputs, output):
        q, k, v, extras, symbols, scale, forward_json, backward_json = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, *extras)
        ctx.options = (symbols, scale, forward_json, backward_json)
        ctx.extra_count = len(extras)
        ctx.mark_non_differentiable(lse)

    def gradient(ctx, grad_out, grad_lse):
        q, k, v, out, lse, *extras = ctx.saved_tensors
        symbols, scale, forward_json, backward_json = ctx.options
        wanted = any(ctx.needs_input_grad[3:4])
        dq, dk, dv, grads = backward(grad_out.contiguous(), q, k, v, out, lse, list(extras),
                                     symbols, scale, forward_json, backward_json, wanted)
        return dq, dk, dv, (list(grads) if wanted else None), None, None, None, None

    forward.register_autograd(gradient, setup_context=setup)
    _OPERATORS[digest] = (forward, backward)
    return forward, backward


def call(compiled, q, k, v, scale, config, backward_config, tensors: dict):
    """(out, lse) through the operator: what a call traced by torch.compile runs."""
    forward, _ = operators(compiled)
    extras = [tensors[n] for n in compiled.extra_inputs if n in tensors]
    symbols = {n: value for n, value in tensors.items() if n not in compiled.extra_inputs}
    return forward(q, k, v, extras, symbols_json(symbols), scale, config_json(config),
                   config_json(backward_config))


__all__ = ["call", "operators"]
