"""The backward of the fused forward (`attention-bwd`) and the autograd Function over both.

The kernels are the cascade compiler's (kernels/compiler/template.py), compiled from the library
cascade of the call's mask, like the forward's; this module keeps the checks, the launch plan and
the autograd Function. By default three launches, no atomics, deterministic:
1. preprocess, per query tile: delta = rowsum(dO ∘ O) and lse in base-2 units (-inf -> +inf so a
   row that saw no key gets P = 0 everywhere);
2. dK/dV, per key tile and key/value head: walk the query tiles (of every query head of the GQA
   group) that see the tile, recompute Pᵀ = exp2(K·Qᵀ·scale - lse), dV += Pᵀ·dO,
   dSᵀ = Pᵀ ∘ (V·dOᵀ - delta), dK += dSᵀ·Q;
3. dQ, per query tile and query head: walk the visible key tiles, recompute P,
   dS = P ∘ (dO·Vᵀ - delta), dQ += dS·K.
Edge tiles are masked, the tiles between them are not, as in the forward (docs/kernels.md).
FlashBackwardConfig.dq_atomic reduce-adds dQ from the dK/dV kernel instead (5 matmuls a tile
pair, no third launch); one_launch runs the dK/dV and dQ programs in one grid.
"""

from __future__ import annotations

import dataclasses

import torch

from einsim.errors import ShapeError
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig
from einsim.kernels.flash.forward import TMA_MIN_FLOPS, flash_forward, resolve_config
from einsim.kernels.launch import plan_cache, tensor_key
from einsim.kernels.runtime import check_attention_inputs, interpreting, tma_compatible


def _check_like(name, tensor, reference):
    if not isinstance(tensor, torch.Tensor):
        raise ShapeError(f"attention-bwd: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if (tuple(tensor.shape) != tuple(reference.shape) or tensor.dtype != reference.dtype
            or tensor.device != reference.device):
        raise ShapeError(f"attention-bwd: {name} must be {tuple(reference.shape)} {reference.dtype} "
                         f"on {reference.device}, got {tuple(tensor.shape)} {tensor.dtype} on "
                         f"{tensor.device}")


class BackwardPlan:
    """What a backward call of one key needs, decided once (docs/kernels.md § Launch plans):
    the checked problem, the resolved config, and the compiled cascade of the call's mask whose
    backward kernels run it (an instance of the cascade compiler's template, like the forward;
    that cascade's own launch plans hold the launches)."""

    __slots__ = ("problem", "config", "scale", "use_tma", "compiled", "symbols", "kernel_config",
                 "launch_plan")

    def __init__(self, problem, config: FlashBackwardConfig, scale, use_tma: bool) -> None:
        from einsim.kernels.flash.forward import mask_cascade
        from einsim.kernels.compiler import compile as compile_cascade

        self.problem = problem
        self.config = config
        self.scale = scale
        self.use_tma = use_tma
        name, self.symbols = mask_cascade(problem)
        self.compiled = compile_cascade(name)
        # the TMA decision made here (tiny problems skip descriptors) is the kernels' config
        self.kernel_config = (config if bool(config.tma) == use_tma
                              else dataclasses.replace(config, tma=use_tma))
        self.launch_plan = None  # the compiled cascade's plan, looked up on the first call

    def run(self, do, q, k, v, out, lse):
        """(dq, dk, dv), new tensors. This plan's key holds everything the compiled cascade's
        plan is keyed by (q, k, v as tensor keys, scale, mask, config), so that plan is looked
        up once, not on every call (host time)."""
        plan = self.launch_plan
        if plan is None:
            plan = self.launch_plan = self.compiled.plan(q, k, v, self.scale, self.symbols, None,
                                                         self.kernel_config)[0]
        return self.compiled.backward(plan, do, q, k, v, out, lse, ())


PLANS = plan_cache("attention-bwd")


def _check_backward_tensors(problem, q, out, do, lse) -> None:
    expected_out = (problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim)
    for name, tensor, shape, dtype in (("out", out, expected_out, q.dtype),
                                       ("grad_out", do, expected_out, q.dtype),
                                       ("lse", lse, expected_out[:3], torch.float32)):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape \
                or tensor.dtype != dtype or tensor.device != q.device:
            got = (f"{tuple(tensor.shape)} {tensor.dtype} on {tensor.device}"
                   if isinstance(tensor, torch.Tensor) else type(tensor).__name__)
            raise ShapeError(f"attention-bwd: {name} must be {shape} {dtype} on {q.device}, "
                             f"got {got}")


def backward_plan(do, q, k, v, out, lse, causal=False, window=None, scale=None, config=None,
                  grads=(None, None, None)) -> BackwardPlan:
    """The cached plan for these tensors and options (checked and resolved on first use)."""
    key, plan = PLANS.find(lambda: (
        tensor_key(do), tensor_key(q), tensor_key(k), tensor_key(v), tensor_key(out),
        tensor_key(lse), causal, window, scale, config,
        tuple(None if g is None else tensor_key(g) for g in grads)))
    if plan is not None:
        return plan
    problem = check_attention_inputs(q, k, v, kernel="attention-bwd", causal=causal,
                                     window=window, scale=scale)
    config = resolve_config("attention-bwd", config, problem, q.device)
    _check_backward_tensors(problem, q, out, do, lse)
    for name, grad, like in zip(("dq", "dk", "dv"), grads, (q, k, v)):
        if grad is not None:
            _check_like(name, grad, like)
    like = [torch.empty_like(t, memory_format=torch.contiguous_format) if g is None else g
            for g, t in zip(grads, (q, k, v))]
    plan = BackwardPlan(problem, config, scale,
                        bool(config.tma) and tma_compatible(q, k, v, do, *like)
                        and (interpreting() or problem.backward_flops() >= TMA_MIN_FLOPS))
    return PLANS.store(key, plan)


def flash_backward(do, q, k, v, out, lse, *, causal: bool = False, window=None,
                   scale: float | None = None, config: FlashBackwardConfig | None = None,
                   dq=None, dk=None, dv=None):
    """Gradients (dq, dk, dv) of flash_forward's output, given its out and lse and dO = dL/dout.
    Any strides; `dq`/`dk`/`dv` may be given (tests poison them)."""
    if window is not None and not isinstance(window, tuple) and isinstance(window, list):
        window = tuple(window)
    plan = backward_plan(do, q, k, v, out, lse, causal, window, scale, config, (dq, dk, dv))
    if not lse.is_contiguous():
        lse = lse.contiguous()
    made = plan.run(do, q, k, v, out, lse)
    # given outputs (the tests poison them) receive the gradients
    return tuple(result if given is None else given.copy_(result)
                 for given, result in zip((dq, dk, dv), made))


class FlashAttentionFunction(torch.autograd.Function):
    """out, lse = attention(q, k, v); backward gives dq, dk, dv through flash_backward."""

    @staticmethod
    def forward(ctx, q, k, v, causal, window, scale, config, backward_config):
        out, lse = flash_forward(q, k, v, causal=causal, window=window, scale=scale, config=config)
        ctx.set_materialize_grads(False)  # lse gets no gradient: no zeros allocated for it
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = (causal, window, scale, backward_config)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        if grad_out is None:  # only lse was used
            return None, None, None, None, None, None, None, None
        q, k, v, out, lse = ctx.saved_tensors
        causal, window, scale, backward_config = ctx.options
        # A broadcast gradient (e.g. of out.sum()) has zero strides: materialise it.
        grad_out = grad_out.contiguous()
        dq, dk, dv = flash_backward(grad_out, q, k, v, out, lse, causal=causal, window=window,
                                    scale=scale, config=backward_config)
        return dq, dk, dv, None, None, None, None, None


def launch_from_inputs(config: FlashBackwardConfig, inputs: dict):
    """The registry's launcher: the backward alone, for inputs from KernelSpec.make_inputs
    (the forward runs once, on first call, with its default config; its out/lse are kept)."""
    if "out" not in inputs:
        out, lse = flash_forward(inputs["q"].detach(), inputs["k"].detach(), inputs["v"].detach(),
                                 causal=inputs.get("causal", False), window=inputs.get("window"),
                                 scale=inputs.get("scale"),
                                 config=inputs.get("forward_config"))
        inputs["out"], inputs["lse"] = out, lse
    return flash_backward(inputs["do"], inputs["q"].detach(), inputs["k"].detach(),
                          inputs["v"].detach(), inputs["out"], inputs["lse"],
                          causal=inputs.get("causal", False), window=inputs.get("window"),
                          scale=inputs.get("scale"), config=config)


__all__ = ["BackwardPlan", "FlashAttentionFunction", "backward_plan", "flash_backward",
           "launch_from_inputs", "FlashConfig"]
