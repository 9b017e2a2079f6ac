"""The callable a compiled cascade becomes: f(q, k, v, *, scale=None, **tensors) in torch SDPA's
layout, differentiable in q, k, v, with per-shape launch plans (no code generation, hashing or
file access per call) and the autograd Function over the generated forward and backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from einsim.errors import ConfigError, ShapeError
from einsim.kernels.compiler.generate import GeneratedKernel
from einsim.kernels.flash.config import (FlashBackwardConfig, FlashConfig, backward_check_config,
                                         backward_default_config, check_config, default_config)
from einsim.kernels.limits import padded_head_dim
from einsim.problem import Problem

LOG2_E = 1.4426950408889634
# Keyword names of the callable itself; a cascade input or symbol may not take them.
RESERVED = ("scale", "config", "backward_config")


@dataclass
class LaunchPlan:
    """What one input shape needs, computed once: the problem, bound sizes, argument values."""

    problem: Problem
    scale: float
    size_values: tuple[int, ...]  # sz_<rank> arguments, in GeneratedKernel.sizes order
    symbol_values: tuple[int, ...]  # sym_<name> arguments, in GeneratedKernel.symbols order
    tensor_names: tuple[str, ...]  # extra inputs passed, in GeneratedKernel.tensors order
    forward_config: FlashConfig
    backward_config: FlashBackwardConfig
    extra: dict[str, Any] = field(default_factory=dict)


def forward_reasons(config, problem: Problem, limits=None) -> list[str]:
    """Why a FlashConfig cannot run the compiled forward (the fused forward's own limits)."""
    return check_config(config, problem, limits)


def backward_reasons(config, problem: Problem, limits=None) -> list[str]:
    """Why a FlashBackwardConfig cannot run the compiled backward (its limits, and the knobs the
    template does not have: the dQ reduce-add and the one-launch grid)."""
    reasons = backward_check_config(config, problem, limits)
    if isinstance(config, FlashBackwardConfig):
        if config.dq_atomic:
            reasons.append("dq_atomic=True: compiled kernels compute dQ in their own kernel")
        if config.one_launch:
            reasons.append("one_launch=True: compiled kernels use two launches")
    return reasons


class CompiledAttention:
    """softmax attention as the cascade defines it, as fused Triton kernels (see compile())."""

    config_type = FlashConfig
    backward_config_type = FlashBackwardConfig

    def __init__(self, generated: GeneratedKernel):
        self.generated = generated
        self.form = generated.form
        self.cascade = generated.form.cascade
        self.name = f"compiled:{self.cascade.name}"
        self._module = None
        self._plans: dict[tuple, LaunchPlan] = {}
        roles = self.form.roles
        bound_by_tensors = {roles.batch, roles.head, roles.kv_head, roles.query, roles.key,
                            roles.head_dim, roles.value_dim}
        self._role_symbols = {self.cascade.ranks[r] for r in bound_by_tensors
                              if isinstance(self.cascade.ranks.get(r), str)
                              and self.cascade.ranks[r] in self.cascade.symbols}
        self.extra_inputs = tuple(n for n in self.cascade.inputs
                                  if n not in (self.form.q, self.form.k, self.form.v))
        clash = [n for n in (*self.extra_inputs, *self.cascade.symbols) if n in RESERVED]
        if clash:
            raise ConfigError(f"{self.cascade.source}: {', '.join(clash)} cannot name an input or a "
                              f"symbol of a compiled cascade: the callable takes {', '.join(RESERVED)}")

    @property
    def source(self) -> str:
        """The generated Triton module (what runs)."""
        return self.generated.source

    @property
    def module(self):
        if self._module is None:
            from einsim.kernels.compiler.source_cache import load_source

            self._module = load_source(self.generated.source, self.generated.digest)
        return self._module

    def __repr__(self) -> str:
        return f"<compiled cascade {self.cascade.name!r} ({self.generated.digest})>"

    # -- inputs --------------------------------------------------------------------------------
    def plan(self, q, k, v, scale, keywords: dict[str, Any]) -> tuple[LaunchPlan, tuple]:
        """The plan for these inputs and the extra tensors in kernel order (ShapeError if wrong)."""
        import torch

        tensors, symbols = {}, {}
        for name, value in keywords.items():
            if name in self.extra_inputs:
                if not isinstance(value, torch.Tensor):
                    raise ShapeError(f"{self.name}: input {name} must be a torch.Tensor, got "
                                     f"{type(value).__name__}")
                tensors[name] = value
            elif name in self.cascade.symbols:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ShapeError(f"{self.name}: symbol {name} must be an integer, got {value!r}")
                symbols[name] = value
            else:
                accepted = list(self.extra_inputs) + sorted(set(self.cascade.symbols) - self._role_symbols)
                raise ShapeError(f"{self.name}: unknown keyword {name!r}; the cascade takes "
                                 f"{', '.join(accepted) or 'no extra inputs or symbols'}")
        missing = [n for n in self.extra_inputs if n not in tensors]
        if missing:
            raise ShapeError(f"{self.name}: missing input(s) " + ", ".join(
                f"{n} [{', '.join(self.cascade.inputs[n])}]" for n in missing))
        key = (tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, q.device, scale,
               tuple(sorted(symbols.items())),
               tuple((n, tuple(t.shape), t.dtype, t.device) for n, t in sorted(tensors.items())))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._make_plan(q, k, v, scale, symbols, tensors)
            self._plans[key] = plan
        ordered = tuple(tensors[name] for name in plan.tensor_names)
        return plan, ordered

    def _make_plan(self, q, k, v, scale, symbols, tensors) -> LaunchPlan:
        from einsim.kernels.runtime import check_attention_inputs

        problem = check_attention_inputs(q, k, v, kernel=self.name, scale=scale)
        roles = self.form.roles
        for name in symbols:
            if name in self._role_symbols:
                raise ShapeError(f"{self.name}: {name} is the size of a rank of q, k or v and is "
                                 "taken from their shapes")
        given = dict(symbols)
        given.update({roles.batch: problem.batch, roles.head: problem.q_heads,
                      roles.query: problem.q_len, roles.key: problem.kv_len,
                      roles.head_dim: problem.head_dim, roles.value_dim: problem.v_head_dim})
        if roles.kv_head != roles.head:
            given[roles.kv_head] = problem.kv_heads
        for rank in list(given):
            declared = self.cascade.ranks.get(rank)
            if isinstance(declared, str) and declared in self.cascade.symbols:
                given[declared] = given[rank]
        bound = self.cascade.bind(given)
        for name, tensor in tensors.items():
            expected = self.cascade.tensor_shape(name, bound)
            if tuple(tensor.shape) != expected:
                raise ShapeError(f"{self.name}: input {name} [{', '.join(self.cascade.inputs[name])}] "
                                 f"must have shape {expected} for these q, k, v; got {tuple(tensor.shape)}")
            if tensor.device != q.device:
                raise ShapeError(f"{self.name}: input {name} is on {tensor.device}, q on {q.device}")
            if tensor.is_complex():
                raise ShapeError(f"{self.name}: input {name} is complex ({tensor.dtype})")
        generated = self.generated
        scale_value = 1.0 / math.sqrt(problem.head_dim) if scale is None else float(scale)
        return LaunchPlan(
            problem=problem, scale=scale_value,
            size_values=tuple(int(bound[r]) for r in generated.sizes),
            symbol_values=tuple(int(bound[s]) for s in generated.symbols),
            tensor_names=tuple(name for name, _ in generated.tensors),
            forward_config=default_config(problem),
            backward_config=backward_default_config(problem))

    def tile_lists(self, plan: LaunchPlan, extras: tuple, block_m: int, block_n: int, *,
                   by_key: bool = False, device=None) -> tuple:
        """The block mask's tile lists for (block_m x block_n) tiles, as kernel arguments
        (Lists, ls_b, ls_h, ls_o, ls_k): per query tile (by_key: per key tile) the partial tiles
        and the full tiles of the other side. Built on the GPU from the element mask; kept in the
        plan when the mask reads no input values, else built per call."""
        import torch
        import triton

        generated = self.generated
        key = ("lists", block_m, block_n, by_key)
        if not generated.mask_reads_tensors and key in plan.extra:
            return plan.extra[key]
        problem = plan.problem
        batches = problem.batch if generated.mask_by_batch else 1
        heads = problem.q_heads if generated.mask_by_head else 1
        m_tiles, n_tiles = triton.cdiv(problem.q_len, block_m), triton.cdiv(problem.kv_len, block_n)
        any_ = torch.empty((batches, heads, m_tiles, n_tiles), dtype=torch.int8, device=device)
        full = torch.empty_like(any_)
        self.module.block_classes_kernel[(m_tiles, n_tiles, batches * heads)](
            any_, full, any_.stride(0), any_.stride(1), any_.stride(2), problem.q_len,
            problem.kv_len, heads, problem.group_size, *self._extra_args(plan, extras),
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4)
        lists = tile_lists(any_.bool(), full.bool(), by_key)
        args = (lists, lists.stride(0) if batches > 1 else 0, lists.stride(1) if heads > 1 else 0,
                lists.stride(2), lists.stride(3))
        if not generated.mask_reads_tensors:
            plan.extra[key] = args
        return args

    def _extra_args(self, plan: LaunchPlan, extras: tuple) -> list:
        args = []
        for tensor in extras:
            args.append(tensor)
            args += list(tensor.stride())
        return args + list(plan.size_values) + list(plan.symbol_values)

    # -- calls -------------------------------------------------------------------------------------
    def __call__(self, q, k, v, *, scale: float | None = None, config: FlashConfig | None = None,
                 backward_config: FlashBackwardConfig | None = None, **tensors):
        """out [B, Hq, P, Dv] = softmax(S)·V with the cascade's score S and mask."""
        out, _ = self.forward_with_lse(q, k, v, scale=scale, config=config,
                                       backward_config=backward_config, **tensors)
        return out

    def forward_with_lse(self, q, k, v, *, scale=None, config=None, backward_config=None,
                         **tensors):
        """(out, lse): lse [B, Hq, P] fp32 natural log (not differentiable; -inf for a row that
        sees no key, whose output is 0)."""
        import torch

        plan, extras = self.plan(q, k, v, scale, tensors)
        for name, tensor in zip(plan.tensor_names, extras):
            if tensor.requires_grad and torch.is_grad_enabled():
                raise ConfigError(f"{self.name}: input {name} requires grad; gradients of extra "
                                  "inputs are not generated yet (detach it)")
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if needs_grad:
            return CompiledAttentionFunction.apply(self, plan, config, backward_config, q, k, v,
                                                   *extras)
        return self.forward(plan, q, k, v, extras, config)

    def forward(self, plan: LaunchPlan, q, k, v, extras: tuple, config=None):
        import torch
        import triton

        from einsim.kernels.flash.forward import descriptor, io_dtype, remember_launch
        from einsim.kernels.runtime import (interpreter_needs_fp32_dots, interpreting,
                                            patch_interpreter, tma_compatible)

        problem = plan.problem
        config = self._checked(config or plan.forward_config, problem, forward_reasons, q.device)
        if interpreting():
            patch_interpreter()
        out = torch.empty((problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim),
                          dtype=q.dtype, device=q.device)
        lse = torch.empty((problem.batch, problem.q_heads, problem.q_len), dtype=torch.float32,
                          device=q.device)
        block_d, block_dv = padded_head_dim(problem.head_dim), padded_head_dim(problem.v_head_dim)
        use_tma = config.tma and tma_compatible(q, k, v, out)
        if use_tma:
            q_arg = descriptor(q, config.BLOCK_M, block_d)
            k_arg = descriptor(k, config.BLOCK_N, block_d)
            v_arg = descriptor(v, config.BLOCK_N, block_dv)
            o_arg = descriptor(out, config.BLOCK_M, block_dv)
        else:
            q_arg, k_arg, v_arg, o_arg = q, k, v, out
        num_m_tiles = triton.cdiv(problem.q_len, config.BLOCK_M)
        lists = (self.tile_lists(plan, extras, config.BLOCK_M, config.BLOCK_N, device=q.device)
                 if self.generated.mask_mode == "blocks" else (lse, 0, 0, 0, 0))
        compiled = self.module.forward_kernel[(num_m_tiles, problem.batch * problem.q_heads)](
            q_arg, k_arg, v_arg, o_arg, lse,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            problem.q_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, plan.scale, plan.scale * LOG2_E, num_m_tiles,
            *lists, *self._extra_args(plan, extras),
            USE_TMA=use_tma, DOT_FP32=interpreter_needs_fp32_dots(problem.dtype),
            WARP_SPECIALIZE=bool(config.warp_specialize) and not interpreting(),
            IO_DTYPE=io_dtype(q), EXP_SPLIT=config.exp_split,
            BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N, BLOCK_D=block_d, BLOCK_DV=block_dv,
            num_warps=config.num_warps, num_stages=config.num_stages)
        remember_launch(f"{self.name}-fwd", compiled)
        return out, lse

    def backward(self, plan: LaunchPlan, do, q, k, v, out, lse, extras: tuple, config=None):
        """(dq, dk, dv) from the forward's out and lse and dO."""
        import torch
        import triton

        from einsim.kernels.flash.backward import _backward_preprocess
        from einsim.kernels.flash.forward import descriptor, io_dtype, remember_launch
        from einsim.kernels.runtime import (interpreter_needs_fp32_dots, interpreting,
                                            patch_interpreter, tma_compatible)

        problem = plan.problem
        config = self._checked(config or plan.backward_config, problem, backward_reasons, q.device)
        if interpreting():
            patch_interpreter()
        block_d, block_dv = padded_head_dim(problem.head_dim), padded_head_dim(problem.v_head_dim)
        rows = problem.batch * problem.q_heads
        delta = torch.empty((rows, problem.q_len), dtype=torch.float32, device=q.device)
        lse2 = torch.empty_like(delta)
        pre_block = 64 if block_dv <= 128 else 32
        _backward_preprocess[(triton.cdiv(problem.q_len, pre_block), rows)](
            out, do, lse.contiguous(), delta, lse2, *out.stride(), *do.stride(),
            problem.q_heads, problem.q_len, problem.v_head_dim,
            BLOCK_M=pre_block, BLOCK_DV=block_dv, num_warps=4)
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        dk = torch.empty_like(k, memory_format=torch.contiguous_format)
        dv = torch.empty_like(v, memory_format=torch.contiguous_format)
        use_tma = config.tma and tma_compatible(q, k, v, do, dq, dk, dv)

        def arg(tensor, block, cols):
            return descriptor(tensor, block, cols) if use_tma else tensor

        grad_constant = self.generated.grad_constant
        grad_scale = plan.scale * (grad_constant if grad_constant is not None else 1.0)
        common = dict(USE_TMA=use_tma, DOT_FP32=interpreter_needs_fp32_dots(problem.dtype),
                      IO_DTYPE=io_dtype(q), BLOCK_D=block_d, BLOCK_DV=block_dv,
                      num_warps=config.num_warps, num_stages=config.num_stages)
        extra = self._extra_args(plan, extras)
        blocks = self.generated.mask_mode == "blocks"
        bm, bn = config.BLOCK_M, config.BLOCK_N
        lists = (self.tile_lists(plan, extras, bm, bn, by_key=True, device=q.device) if blocks
                 else (delta, 0, 0, 0, 0))
        dkdv = self.module.backward_dkdv_kernel[
            (triton.cdiv(problem.kv_len, bn), problem.batch * problem.kv_heads)](
            arg(q, bm, block_d), arg(k, bn, block_d), arg(v, bn, block_dv), arg(do, bm, block_dv),
            arg(dk, bn, block_d), arg(dv, bn, block_dv), lse2, delta,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
            problem.q_heads, problem.kv_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, plan.scale, plan.scale * LOG2_E, grad_scale,
            *lists, *extra, BLOCK_M=bm, BLOCK_N=bn, **common)
        remember_launch(f"{self.name}-bwd-dkdv", dkdv)
        bm, bn = config.BLOCK_M_DQ, config.BLOCK_N_DQ
        num_m_tiles = triton.cdiv(problem.q_len, bm)
        lists = (self.tile_lists(plan, extras, bm, bn, device=q.device) if blocks
                 else (delta, 0, 0, 0, 0))
        dq_kernel = self.module.backward_dq_kernel[(num_m_tiles, rows)](
            arg(q, bm, block_d), arg(k, bn, block_d), arg(v, bn, block_dv), arg(do, bm, block_dv),
            arg(dq, bm, block_d), lse2, delta,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
            problem.q_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, plan.scale, plan.scale * LOG2_E, grad_scale,
            num_m_tiles, *lists, *extra, BLOCK_M=bm, BLOCK_N=bn, **common)
        remember_launch(f"{self.name}-bwd-dq", dq_kernel)
        return dq, dk, dv

    def _checked(self, config, problem, reasons_of, device):
        from einsim.kernels.runtime import device_limits

        reasons = reasons_of(config, problem, device_limits(device))
        if reasons:
            raise ConfigError(f"{self.name}: config {config} cannot run {problem.describe()}: "
                              + "; ".join(reasons))
        return config


def tile_lists(any_, full, by_key: bool):
    """[B', H', outer tiles, 2, 1 + inner tiles] int32 from the block classes [B', H', query
    tiles, key tiles]: for each outer tile (a query tile; by_key: a key tile) the number of
    partial inner tiles then their indices in ascending order, and the same for full tiles."""
    import torch

    if by_key:
        any_, full = any_.transpose(-1, -2), full.transpose(-1, -2)
    full = full & any_
    partial = any_ & ~full
    inner = partial.shape[-1]
    lists = torch.empty((*partial.shape[:-1], 2, 1 + inner), dtype=torch.int32, device=any_.device)
    for kind, chosen in enumerate((partial, full)):
        lists[..., kind, 0] = chosen.sum(-1, dtype=torch.int32)
        # a stable sort of "not chosen" puts the chosen tiles first, in ascending order
        lists[..., kind, 1:] = torch.sort((~chosen).to(torch.int8), dim=-1, stable=True).indices
    return lists


def _autograd_function():
    import torch

    class CompiledAttentionFunction(torch.autograd.Function):
        """out, lse = kernel(q, k, v, extras); backward gives dq, dk, dv."""

        @staticmethod
        def forward(ctx, kernel, plan, config, backward_config, q, k, v, *extras):
            out, lse = kernel.forward(plan, q, k, v, extras, config)
            ctx.save_for_backward(q, k, v, out, lse, *extras)
            ctx.kernel, ctx.plan, ctx.backward_config = kernel, plan, backward_config
            ctx.mark_non_differentiable(lse)
            return out, lse

        @staticmethod
        def backward(ctx, grad_out, grad_lse):
            q, k, v, out, lse, *extras = ctx.saved_tensors
            # A broadcast gradient (e.g. of out.sum()) has zero strides: materialise it.
            dq, dk, dv = ctx.kernel.backward(ctx.plan, grad_out.contiguous(), q, k, v, out, lse,
                                             tuple(extras), ctx.backward_config)
            return (None, None, None, None, dq, dk, dv) + (None,) * len(extras)

    return CompiledAttentionFunction


class _LazyFunction:
    """The autograd Function, built on first use so that importing this module needs no torch."""

    _function = None

    def apply(self, *args):
        if _LazyFunction._function is None:
            _LazyFunction._function = _autograd_function()
        return _LazyFunction._function.apply(*args)


CompiledAttentionFunction = _LazyFunction()

__all__ = ["CompiledAttention", "LaunchPlan", "backward_reasons", "forward_reasons"]
