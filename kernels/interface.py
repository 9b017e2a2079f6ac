"""`einsim.kernels.attention`: the front door to the fused kernels, a drop-in autograd function
that is also a PyTorch operator (`torch.ops.einsim.attention_forward`) under torch.compile.

attention(q, k, v) with q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (torch SDPA's
layout; GQA when Hkv divides Hq), fp16 or bf16, any strides. Differentiable in q, k and v.
"""

from __future__ import annotations

import torch

from einsim.kernels import ops
from einsim.kernels.flash.backward import FlashAttentionFunction
from einsim.kernels.flash.forward import flash_forward
from einsim.kernels.runtime import check_flag

# torch.autograd.Function.apply is a Python wrapper (functorch checks, the arguments re-packed)
# over the C implementation; outside functorch transforms it only forwards to it. Calling the C
# apply directly saves its cost on every differentiable call (about 4 us on a CPU core here).
_c_apply = super(torch.autograd.Function, FlashAttentionFunction).apply
_functorch_active = torch._C._are_functorch_transforms_active


def attention(q, k, v, causal: bool = False, window=None, scale: float | None = None,
              config=None, *, backward_config=None, return_lse: bool = False):
    """softmax(q·kᵀ·scale + mask)·v by the fused forward (`attention-fwd`); gradients by
    `attention-bwd`. Masks are bottom-right aligned (einsim.einsum_cascades.reference):
    causal keeps key j for query i iff j <= i + Nk - Nq; window=(left, right) keeps
    i' - left <= j <= i' + right. scale defaults to 1/sqrt(D). config / backward_config: a
    FlashConfig / FlashBackwardConfig (None: tuned cache, else the default). With
    return_lse=True also returns the natural-log log-sum-exp [B, Hq, Nq] (fp32, not
    differentiable; -inf for a row that sees no key, whose output is 0).

    Eager calls on plain tensors go straight to the cached launch plan (no dispatcher hop: a
    few microseconds a call); under torch.compile, and for tensor subclasses (fake, functional
    tensors), the call is the operator torch.ops.einsim.attention_forward, which the compiler
    keeps as one node (docs/kernels.md § PyTorch operators).
    """
    if causal is not False and causal is not True:
        causal = check_flag(causal, "causal", "attention")  # 'no' is truthy: it ran a causal mask
    if window is not None and not isinstance(window, tuple):
        window = tuple(window) if isinstance(window, list) else window
    if ops.traced(q):
        out, lse = ops.attention_forward(q, k, v, bool(causal), window, scale,
                                         ops.config_json(config), ops.config_json(backward_config))
    elif torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        apply = FlashAttentionFunction.apply if _functorch_active() else _c_apply
        out, lse = apply(q, k, v, bool(causal), window, scale, config, backward_config)
    else:
        out, lse = flash_forward(q, k, v, causal=causal, window=window, scale=scale,
                                 config=config)
    return (out, lse) if return_lse else out
