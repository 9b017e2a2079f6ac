"""The callable a compiled cascade becomes: f(q, k, v, *, scale=None, **tensors) in torch SDPA's
layout, differentiable in q, k, v, with per-shape launch plans (no code generation, hashing or
file access per call) and the autograd Function over the generated forward and backward.
"""

from __future__ import annotations

import math
from typing import Any

from einsim.errors import ConfigError, ShapeError
from einsim.kernels.compiler.generate import GeneratedKernel
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig, backward_check_config, check_config
from einsim.kernels.launch import DescriptorFactory, TritonLaunch, plan_cache, remember_launch, tensor_key
from einsim.kernel_rules import padded_head_dim
from einsim.problem import Problem

LOG2_E = 1.4426950408889634
# Keyword names of the callable itself; a cascade input or symbol may not take them.
RESERVED = ("scale", "config", "backward_config", "block_mask")


class LaunchPlan:
    """What one call key needs, decided once (docs/kernels.md § Launch plans): the checked
    problem, the resolved configs, the bound sizes and symbols, and the Triton launches, built
    on first use from the real tensors."""

    __slots__ = ("problem", "scale", "size_values", "symbol_values", "tensor_names",
                 "forward_config", "backward_config", "out_shape", "lse_shape", "forward_tma",
                 "backward_tma", "block_d", "block_dv", "launches", "descriptors",
                 "forward_descriptors", "extra")

    def __init__(self, problem: Problem, scale: float, size_values: tuple, symbol_values: tuple,
                 tensor_names: tuple, forward_config: FlashConfig,
                 backward_config: FlashBackwardConfig, forward_tma: bool, backward_tma: bool):
        self.problem = problem
        self.scale = scale
        self.size_values = size_values  # sz_<rank> arguments, in GeneratedKernel.sizes order
        self.symbol_values = symbol_values  # sym_<name> arguments, in GeneratedKernel.symbols order
        self.tensor_names = tensor_names  # extra inputs passed, in GeneratedKernel.tensors order
        self.forward_config = forward_config
        self.backward_config = backward_config
        self.out_shape = (problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim)
        self.lse_shape = self.out_shape[:3]
        self.block_d = padded_head_dim(problem.head_dim)
        self.block_dv = padded_head_dim(problem.v_head_dim)
        self.forward_tma = forward_tma
        self.backward_tma = backward_tma
        self.launches: dict[str, Any] = {}  # kernel role -> TritonLaunch
        self.descriptors: dict[tuple, Any] = {}  # (role, block rows) -> DescriptorFactory
        self.forward_descriptors = None  # the forward's four factories, once built
        self.extra: dict[Any, Any] = {}  # block-mask tile lists of masks that read no input


def forward_reasons(config, problem: Problem, limits=None) -> list[str]:
    """Why a FlashConfig cannot run the compiled forward (the fused forward's own limits)."""
    return check_config(config, problem, limits)


def backward_reasons(config, problem: Problem, limits=None) -> list[str]:
    """Why a FlashBackwardConfig cannot run the compiled backward (the fused kernels' limits:
    the template has their every knob)."""
    return backward_check_config(config, problem, limits)


def _interpreting() -> bool:
    from einsim.kernels.runtime import interpreting

    return interpreting()


def _is_compiling() -> bool:
    """torch.compiler.is_compiling, looked up once (this module imports torch lazily)."""
    global _is_compiling
    import torch

    _is_compiling = torch.compiler.is_compiling
    return _is_compiling()


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
        self._plans = None  # its PlanCache, made on first call (kernels/launch.py)
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
    def plan(self, q, k, v, scale, keywords: dict[str, Any], config=None,
             backward_config=None) -> tuple[LaunchPlan, tuple]:
        """The launch plan of this call (built and checked on a miss; ShapeError/ConfigError for
        bad input, every time) and the extra tensors in kernel order. A hit costs one lookup."""
        if self._plans is None:
            self._plans = plan_cache(f"{self.name}:{self.generated.digest}")

        if keywords:
            def make_key():
                return (tensor_key(q), tensor_key(k), tensor_key(v), scale, config,
                        backward_config, tuple((n, tensor_key(t) if hasattr(t, "data_ptr") else t)
                                               for n, t in keywords.items()))
        else:  # the common case of a cascade without extra inputs or symbols: a shorter key
            def make_key():
                return (tensor_key(q), tensor_key(k), tensor_key(v), scale, config,
                        backward_config)

        key, plan = self._plans.find(make_key)
        if plan is None:
            plan = self._plans.store(key, self._make_plan(q, k, v, scale, keywords, config,
                                                          backward_config))
        if not plan.tensor_names:
            return plan, ()
        try:
            return plan, tuple(keywords[name] for name in plan.tensor_names)
        except KeyError:  # a plan stored under a key of other keywords cannot happen; be safe
            return self._make_plan(q, k, v, scale, keywords, config, backward_config), ()

    def _split_keywords(self, keywords: dict[str, Any]) -> tuple[dict, dict]:
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
                if not -(2**31) < value < 2**31:  # an OverflowError from Triton's specialisation
                    raise ShapeError(f"{self.name}: symbol {name} must be an integer of at most 31 bits "
                                     f"(|{name}| < 2**31, beyond any position), got {value:.3g}")
                symbols[name] = value
            else:
                accepted = list(self.extra_inputs) + sorted(set(self.cascade.symbols) - self._role_symbols)
                raise ShapeError(f"{self.name}: unknown keyword {name!r}; the cascade takes "
                                 f"{', '.join(accepted) or 'no extra inputs or symbols'}")
        missing = [n for n in self.extra_inputs if n not in tensors]
        if missing:
            raise ShapeError(f"{self.name}: missing input(s) " + ", ".join(
                f"{n} [{', '.join(self.cascade.inputs[n])}]" for n in missing))
        return tensors, symbols

    def bind(self, problem: Problem, symbols: dict[str, int] | None = None) -> dict[str, int]:
        """Every rank and symbol of the cascade for `problem` (symbols: the user's values of
        size symbols, e.g. window_left; the sizes of q, k, v's ranks come from the problem)."""
        roles = self.form.roles
        symbols = dict(symbols or {})
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
        return self.cascade.bind(given)

    def visible_pairs(self, problem: Problem, symbols: dict[str, int] | None = None) -> int | None:
        """(query, key) pairs one head attends under the cascade's mask (exact, counted by the
        cascade's iteration space); None when the mask reads input values or cannot be counted
        at this size."""
        from einsim.errors import EinsimError

        if self.generated.mask_reads_tensors:
            return None
        bound = self.bind(problem, symbols)
        try:
            points = self.cascade.einsum(self.form.local_sum).iteration_points(bound)
        except EinsimError:
            return None
        return points // (problem.batch * problem.q_heads)

    def reference(self, q, k, v, *, scale: float | None = None, dtype=None, **tensors):
        """The cascade's torch twin (kernels/compiler/reference.py): out in `dtype` (float64 on
        the CPU, float32 elsewhere), differentiable in q, k, v."""
        from einsim.kernels.compiler.reference import twin_attention

        problem = Problem(batch=q.shape[0], q_heads=q.shape[1], kv_heads=k.shape[1],
                          q_len=q.shape[2], kv_len=k.shape[2], head_dim=q.shape[3],
                          v_head_dim=v.shape[3], dtype="fp32")
        symbols = {n: t for n, t in tensors.items() if n in self.cascade.symbols}
        extras = {n: t for n, t in tensors.items() if n in self.extra_inputs}
        missing = [n for n in self.extra_inputs if n not in extras]
        if missing:
            raise ShapeError(f"{self.name}: missing input(s) {', '.join(missing)}")
        scale = 1.0 / math.sqrt(problem.head_dim) if scale is None else float(scale)
        return twin_attention(self.form, self.bind(problem, symbols), q, k, v, extras, scale,
                              dtype=dtype)

    def _make_plan(self, q, k, v, scale, keywords, config, backward_config) -> LaunchPlan:
        from einsim.kernels.compiler.registry import kernel_stem
        from einsim.kernels.registry import KERNELS
        from einsim.kernels.runtime import check_attention_inputs, device_limits, tma_compatible

        tensors, symbols = self._split_keywords(keywords)
        problem = check_attention_inputs(q, k, v, kernel=self.name, scale=scale)
        bound = self.bind(problem, symbols)
        for name, tensor in tensors.items():
            expected = self.cascade.tensor_shape(name, bound)
            if tuple(tensor.shape) != expected:
                raise ShapeError(f"{self.name}: input {name} [{', '.join(self.cascade.inputs[name])}] "
                                 f"must have shape {expected} for these q, k, v; got {tuple(tensor.shape)}")
            if tensor.device != q.device:
                raise ShapeError(f"{self.name}: input {name} is on {tensor.device}, q on {q.device}")
            if tensor.is_complex():
                raise ShapeError(f"{self.name}: input {name} is complex ({tensor.dtype})")
            if tensor.numel() >= 2**31:
                raise ShapeError(f"{self.name}: input {name} has 2^31 elements or more; the "
                                 "kernels index extra inputs with 32-bit offsets")
        limits = device_limits(q.device)
        stem = kernel_stem(self)
        forward_config = KERNELS[f"{stem}-fwd"].resolve_config(config, problem, limits)
        backward_config = KERNELS[f"{stem}-bwd"].resolve_config(backward_config, problem, limits)
        for reasons_of, chosen in ((forward_reasons, forward_config),
                                   (backward_reasons, backward_config)):
            reasons = reasons_of(chosen, problem, limits)
            if reasons:
                raise ConfigError(f"{self.name}: config {chosen} cannot run {problem.describe()}: "
                                  + "; ".join(reasons))
        generated = self.generated
        return LaunchPlan(
            problem=problem, scale=1.0 / math.sqrt(problem.head_dim) if scale is None else float(scale),
            size_values=tuple(int(bound[r]) for r in generated.sizes),
            symbol_values=tuple(int(bound[s]) for s in generated.symbols),
            tensor_names=tuple(name for name, _ in generated.tensors),
            forward_config=forward_config, backward_config=backward_config,
            forward_tma=bool(forward_config.tma) and tma_compatible(q, k, v),
            backward_tma=bool(backward_config.tma) and tma_compatible(q, k, v))

    def tile_lists(self, plan: LaunchPlan, extras: tuple, block_m: int, block_n: int, *,
                   by_key: bool = False, device=None, block_mask=None) -> tuple:
        """The block mask's tile lists for (block_m x block_n) tiles, as kernel arguments
        (Lists, ls_b, ls_h, ls_o, ls_k): per query tile (by_key: per key tile) the partial tiles
        and the full tiles of the other side. Built on the GPU from the element mask; kept in the
        plan when the mask reads no input values, else built per call."""
        import torch
        import triton

        generated = self.generated
        key = ("lists", block_m, block_n, by_key)
        if block_mask is not None:
            return block_mask.lists_for(self, plan, key)
        if not generated.mask_reads_tensors and key in plan.extra:
            return plan.extra[key]
        problem = plan.problem
        batches = problem.batch if generated.mask_by_batch else 1
        heads = problem.q_heads if generated.mask_by_head else 1
        m_tiles, n_tiles = triton.cdiv(problem.q_len, block_m), triton.cdiv(problem.kv_len, block_n)
        any_ = torch.empty((batches, heads, m_tiles, n_tiles), dtype=torch.int8, device=device)
        full = torch.empty_like(any_)
        launch = plan.launches.get(("classes", block_m, block_n))
        if launch is None:
            launch = plan.launches[("classes", block_m, block_n)] = TritonLaunch(
                self.module.block_classes_kernel, (m_tiles, n_tiles, batches * heads),
                any_, full, any_.stride(0), any_.stride(1), any_.stride(2), problem.q_len,
                problem.kv_len, heads, problem.group_size, *self._extra_args(plan, extras),
                BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4)
        launch(any_, full, *extras)
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

    def _descriptor(self, plan: LaunchPlan, role: str, tensor, rows: int, cols: int):
        factory = plan.descriptors.get((role, rows))
        if factory is None:
            factory = plan.descriptors[(role, rows)] = DescriptorFactory(tensor, [1, 1, rows, cols])
        return factory(tensor)

    # -- calls -------------------------------------------------------------------------------------
    def __call__(self, q, k, v, *, scale: float | None = None, config: FlashConfig | None = None,
                 backward_config: FlashBackwardConfig | None = None, block_mask=None, **tensors):
        """out [B, Hq, P, Dv] = softmax(S)·V with the cascade's score S and mask. block_mask:
        from .block_mask(...) with the same shapes and mask inputs, to reuse its tile lists."""
        return self._run(q, k, v, scale, config, backward_config, block_mask, tensors)[0]

    def block_mask(self, q, k, v, *, scale=None, config=None, backward_config=None, **tensors):
        """The tile lists of this call's mask (forward, dK/dV and dQ tile shapes), built once
        on the GPU, to pass as `block_mask=` to calls with the same shapes and mask inputs (as
        FlexAttention's BlockMask): for masks that read input values, which are otherwise
        classified on every call."""
        if self.generated.mask_mode != "blocks":
            raise ConfigError(f"{self.name}: the mask is skipped by tile ranges computed in the "
                              "kernels; there is no block mask to build")
        plan, extras = self.plan(q, k, v, scale, tensors, config, backward_config)
        forward, backward = plan.forward_config, plan.backward_config
        lists = {}
        for block_m, block_n, by_key in ((forward.BLOCK_M, forward.BLOCK_N, False),
                                         (backward.BLOCK_M, backward.BLOCK_N, True),
                                         (backward.BLOCK_M_DQ, backward.BLOCK_N_DQ, False)):
            lists[("lists", block_m, block_n, by_key)] = self.tile_lists(
                plan, extras, block_m, block_n, by_key=by_key, device=q.device)
        return BlockMask(self.generated.digest, plan.problem, forward, backward, lists)

    def forward_with_lse(self, q, k, v, *, scale=None, config=None, backward_config=None,
                         block_mask=None, **tensors):
        """(out, lse): lse [B, Hq, P] fp32 natural log (not differentiable; -inf for a row that
        sees no key, whose output is 0). Traced by torch.compile (or given tensor subclasses),
        the call is the operator torch.ops.einsim.cascade_<digest>_forward (compiler/ops.py)."""
        return self._run(q, k, v, scale, config, backward_config, block_mask, tensors)

    def _run(self, q, k, v, scale, config, backward_config, block_mask, tensors: dict):
        import torch

        if _is_compiling() or type(q) is not torch.Tensor:
            if block_mask is not None:
                raise ConfigError(f"{self.name}: block_mask= cannot pass through torch.compile; "
                                  "the operator builds the block mask itself")
            from einsim.kernels.compiler.ops import call

            return call(self, q, k, v, scale, config, backward_config, tensors)
        plan, extras = self.plan(q, k, v, scale, tensors, config, backward_config)
        if torch.is_grad_enabled():
            extra_grad = False
            for name, tensor in zip(plan.tensor_names, extras):
                if tensor.requires_grad:
                    if name not in self.generated.grad_accesses:
                        raise ConfigError(
                            f"{self.name}: input {name} requires grad, but the score is not "
                            "differentiable in it (it is read only by the mask, or only through "
                            "steps such as floor): detach it")
                    extra_grad = True
            if extra_grad or q.requires_grad or k.requires_grad or v.requires_grad:
                return CompiledAttentionFunction.apply(self, plan, block_mask, q, k, v, *extras)
        return self.forward(plan, q, k, v, extras, block_mask)

    def forward(self, plan: LaunchPlan, q, k, v, extras: tuple, block_mask=None):
        """(out, lse) by the generated forward kernel (plan: CompiledAttention.plan)."""
        import torch

        device = q.device
        out = torch.empty(plan.out_shape, dtype=q.dtype, device=device)
        lse = torch.empty(plan.lse_shape, dtype=torch.float32, device=device)
        config = plan.forward_config
        if self.generated.mask_mode == "blocks":
            lists = self.tile_lists(plan, extras, config.BLOCK_M, config.BLOCK_N, device=device,
                                    block_mask=block_mask)
        else:
            lists = (lse, 0, 0, 0, 0)
        if plan.forward_tma:
            factories = plan.forward_descriptors
            if factories is None:
                factories = plan.forward_descriptors = (
                    DescriptorFactory(q, [1, 1, config.BLOCK_M, plan.block_d]),
                    DescriptorFactory(k, [1, 1, config.BLOCK_N, plan.block_d]),
                    DescriptorFactory(v, [1, 1, config.BLOCK_N, plan.block_dv]),
                    DescriptorFactory(out, [1, 1, config.BLOCK_M, plan.block_dv]))
            args = (factories[0](q), factories[1](k), factories[2](v), factories[3](out))
        else:
            args = (q, k, v, out)
        launch = plan.launches.get("forward")
        if launch is None:
            launch = plan.launches["forward"] = self._forward_launch(plan, q, k, v, out, lse,
                                                                     args, lists, extras)
        launch(*args, lse, lists[0], *extras)
        return out, lse

    def _forward_launch(self, plan, q, k, v, out, lse, args, lists, extras):
        import triton

        from einsim.kernels.runtime import interpreter_needs_fp32_dots, interpreting, io_dtype, patch_interpreter

        if interpreting():
            patch_interpreter()
        problem, config = plan.problem, plan.forward_config
        num_m_tiles = triton.cdiv(problem.q_len, config.BLOCK_M)
        return TritonLaunch(
            self.module.forward_kernel, (num_m_tiles, problem.batch * problem.q_heads),
            *args, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            problem.q_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, plan.scale, plan.scale * LOG2_E, num_m_tiles,
            *lists, *self._extra_args(plan, extras),
            USE_TMA=plan.forward_tma, DOT_FP32=interpreter_needs_fp32_dots(problem.dtype),
            WARP_SPECIALIZE=bool(config.warp_specialize) and not interpreting(),
            IO_DTYPE=io_dtype(q), EXP_SPLIT=config.exp_split,
            BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N,
            BLOCK_D=padded_head_dim(problem.head_dim), BLOCK_DV=padded_head_dim(problem.v_head_dim),
            num_warps=config.num_warps, num_stages=config.num_stages,
            on_compile=lambda compiled: remember_launch(f"{self.name}-fwd", compiled))

    def backward(self, plan: LaunchPlan, do, q, k, v, out, lse, extras: tuple,
                 extra_grads: bool = False, block_mask=None):
        """(dq, dk, dv) from the forward's out and lse and dO = dL/dout (any strides); with
        extra_grads, (dq, dk, dv, {input name: gradient}) for the inputs the score is
        differentiable in (accumulated in fp32 by the dQ kernel, returned in their dtypes).

        The config picks how dQ is made: by its own kernel (default; P and dP recomputed, 7
        matmuls a tile pair, deterministic), reduce-added into an fp32 buffer by the dK/dV
        kernel (dq_atomic: 5 matmuls, summation order not fixed), or by dQ programs in the
        dK/dV kernel's grid (one_launch)."""
        import torch

        problem, config = plan.problem, plan.backward_config
        if extra_grads and config.dq_atomic:
            raise ConfigError(f"{self.name}: a backward config with dq_atomic=True makes no dQ "
                              "kernel, which is where the gradients of extra inputs are summed; "
                              "use dq_atomic=False to differentiate in them")
        # dO as the plan's launches were built for: contiguous and 16-byte aligned
        if not do.is_contiguous() or do.data_ptr() % 16:
            do = do.contiguous() if not do.is_contiguous() else do.clone()
        device = q.device
        rows = problem.batch * problem.q_heads
        delta = torch.empty((rows, problem.q_len), dtype=torch.float32, device=device)
        lse2 = torch.empty_like(delta)
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        dk = torch.empty_like(k, memory_format=torch.contiguous_format)
        dv = torch.empty_like(v, memory_format=torch.contiguous_format)
        launches = plan.launches
        if "preprocess" not in launches:
            launches["preprocess"] = self._preprocess_launch(plan, out, do, lse, delta, lse2)
        launches["preprocess"](out, do, lse, delta, lse2)
        blocks = self.generated.mask_mode == "blocks"
        bm, bn, bmq, bnq = config.BLOCK_M, config.BLOCK_N, config.BLOCK_M_DQ, config.BLOCK_N_DQ
        lists_kv = (self.tile_lists(plan, extras, bm, bn, by_key=True, device=device,
                                    block_mask=block_mask) if blocks else (delta, 0, 0, 0, 0))
        lists_q = (self.tile_lists(plan, extras, bmq, bnq, device=device, block_mask=block_mask)
                   if blocks else (delta, 0, 0, 0, 0))
        buffers, slots = self._grad_buffers(plan, extras, None if extra_grads else delta)
        bd, bdv = plan.block_d, plan.block_dv

        def arg(role, tensor, block, cols):
            return self._descriptor(plan, role, tensor, block, cols) if plan.backward_tma else tensor

        if config.one_launch and not config.dq_atomic:
            tensors = (arg("q", q, bm, bd), arg("k", k, bn, bd), arg("v", v, bn, bdv),
                       arg("do", do, bm, bdv), arg("q", q, bmq, bd), arg("k", k, bnq, bd),
                       arg("v", v, bnq, bdv), arg("do", do, bmq, bdv), arg("dk", dk, bn, bd),
                       arg("dv", dv, bn, bdv), arg("dq", dq, bmq, bd), lse2, delta,
                       lists_kv[0], lists_q[0], *extras, *slots)
            role = "one-launch-grads" if extra_grads else "one-launch"
            if role not in launches:
                launches[role] = self._one_launch(plan, q, k, v, do, dq, dk, dv, tensors,
                                                  lists_kv, lists_q, extras, slots, extra_grads)
            launches[role](*tensors)
        else:
            self._dkdv_then_dq(plan, arg, q, k, v, do, dq, dk, dv, lse2, delta, lists_kv, lists_q,
                               extras, slots, extra_grads)
        if not extra_grads:
            return dq, dk, dv
        by_name = dict(zip(plan.tensor_names, extras))
        return dq, dk, dv, {name: buffer.to(by_name[name].dtype) for name, buffer in buffers.items()}

    def _dkdv_then_dq(self, plan, arg, q, k, v, do, dq, dk, dv, lse2, delta, lists_kv, lists_q,
                      extras, slots, extra_grads):
        """The dK/dV launch, then the dQ launch (or, dq_atomic, dQ reduce-added into an fp32
        buffer by the dK/dV kernel and cast into dq)."""
        import torch

        config = plan.backward_config
        bm, bn, bmq, bnq = config.BLOCK_M, config.BLOCK_N, config.BLOCK_M_DQ, config.BLOCK_N_DQ
        bd, bdv = plan.block_d, plan.block_dv
        launches = plan.launches
        dq_acc = None
        dq_target = dq
        if config.dq_atomic:
            dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
            # Triton's interpreter has no descriptor reduce: element-wise atomics there
            dq_target = (self._descriptor(plan, "dq_acc", dq_acc, bm, bd)
                         if plan.backward_tma and not _interpreting() else dq_acc)
        tensors = (arg("q", q, bm, bd), arg("k", k, bn, bd), arg("v", v, bn, bdv),
                   arg("do", do, bm, bdv), arg("dk", dk, bn, bd), arg("dv", dv, bn, bdv),
                   dq_target, lse2, delta, lists_kv[0], *extras)
        if "dkdv" not in launches:
            launches["dkdv"] = self._dkdv_launch(plan, q, k, v, do, dk, dv,
                                                 dq_acc if dq_acc is not None else dq,
                                                 tensors, lists_kv, extras)
        launches["dkdv"](*tensors)
        if dq_acc is not None:
            dq.copy_(dq_acc)
            return
        tensors = (arg("q", q, bmq, bd), arg("k", k, bnq, bd), arg("v", v, bnq, bdv),
                   arg("do", do, bmq, bdv), arg("dq", dq, bmq, bd), lse2, delta,
                   lists_q[0], *extras, *slots)
        role = "dq-grads" if extra_grads else "dq"
        if role not in launches:
            launches[role] = self._dq_launch(plan, q, k, v, do, dq, tensors, lists_q,
                                             extras, slots, extra_grads)
        launches[role](*tensors)

    def _grad_buffers(self, plan: LaunchPlan, extras: tuple, dummy) -> tuple[dict, list]:
        """fp32 gradient buffers of the inputs the score is differentiable in, and the dq
        kernel's gradient slots (one per access; `dummy` in every slot when not computing them)."""
        import torch

        by_name = dict(zip(plan.tensor_names, extras))
        buffers: dict = {}
        slots = []
        for name in self.generated.grad_accesses:
            if dummy is not None:
                slots.append(dummy)
                continue
            if name not in buffers:
                buffers[name] = torch.zeros(by_name[name].shape, dtype=torch.float32,
                                            device=by_name[name].device)
            slots.append(buffers[name])
        return buffers, slots

    def _grad_args(self, slots, extra_grads: bool) -> list:
        """Per access: its gradient buffer and strides (a dummy and zeros when not computed)."""
        found = []
        for slot, name in zip(slots, self.generated.grad_accesses):
            axes = len(self.cascade.inputs[name])
            found += [slot] + (list(slot.stride()) if extra_grads else [0] * axes)
        return found

    def _backward_common(self, plan, q) -> dict:
        from einsim.kernels.runtime import interpreter_needs_fp32_dots, io_dtype, patch_interpreter

        if _interpreting():
            patch_interpreter()
        config = plan.backward_config
        return dict(USE_TMA=plan.backward_tma,
                    DOT_FP32=interpreter_needs_fp32_dots(plan.problem.dtype), IO_DTYPE=io_dtype(q),
                    BLOCK_D=plan.block_d, BLOCK_DV=plan.block_dv, num_warps=config.num_warps,
                    num_stages=config.num_stages)

    def _grad_scale(self, plan) -> float:
        grad_constant = self.generated.grad_constant
        return plan.scale * (grad_constant if grad_constant is not None else 1.0)

    def _preprocess_launch(self, plan, out, do, lse, delta, lse2):
        import triton

        from einsim.kernels.compiler.lib import backward_preprocess

        problem = plan.problem
        pre_block = 64 if plan.block_dv <= 128 else 32
        return TritonLaunch(
            backward_preprocess, (triton.cdiv(problem.q_len, pre_block), problem.batch * problem.q_heads),
            out, do, lse, delta, lse2, *out.stride(), *do.stride(),
            problem.q_heads, problem.q_len, problem.v_head_dim,
            BLOCK_M=pre_block, BLOCK_DV=plan.block_dv, num_warps=4)

    def _dkdv_launch(self, plan, q, k, v, do, dk, dv, dq, tensors, lists, extras):
        import triton

        problem, config = plan.problem, plan.backward_config
        bm, bn = config.BLOCK_M, config.BLOCK_N
        return TritonLaunch(
            self.module.backward_dkdv_kernel,
            (triton.cdiv(problem.kv_len, bn), problem.batch * problem.kv_heads),
            *tensors[:9],
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
            *dq.stride(),
            problem.q_heads, problem.kv_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, plan.scale, plan.scale * LOG2_E,
            self._grad_scale(plan), *lists, *self._extra_args(plan, extras),
            DQ_ATOMIC=bool(config.dq_atomic),
            DQ_TMA=bool(config.dq_atomic) and plan.backward_tma and not _interpreting(),
            BLOCK_M=bm, BLOCK_N=bn, **self._backward_common(plan, q),
            on_compile=lambda compiled: remember_launch(f"{self.name}-bwd-dkdv", compiled))

    def _dq_launch(self, plan, q, k, v, do, dq, tensors, lists, extras, slots, extra_grads):
        import triton

        problem, config = plan.problem, plan.backward_config
        bm, bn = config.BLOCK_M_DQ, config.BLOCK_N_DQ
        num_m_tiles = triton.cdiv(problem.q_len, bm)
        return TritonLaunch(
            self.module.backward_dq_kernel, (num_m_tiles, problem.batch * problem.q_heads),
            *tensors[:7],
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
            problem.q_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, plan.scale, plan.scale * LOG2_E,
            self._grad_scale(plan), num_m_tiles, *lists, *self._extra_args(plan, extras),
            *self._grad_args(slots, extra_grads), BLOCK_M=bm, BLOCK_N=bn,
            EXTRA_GRADS=extra_grads, **self._backward_common(plan, q),
            on_compile=lambda compiled: remember_launch(f"{self.name}-bwd-dq", compiled))

    def _one_launch(self, plan, q, k, v, do, dq, dk, dv, tensors, lists_kv, lists_q, extras,
                    slots, extra_grads):
        import triton

        problem, config = plan.problem, plan.backward_config
        num_key_tiles = triton.cdiv(problem.kv_len, config.BLOCK_N)
        num_m_tiles = triton.cdiv(problem.q_len, config.BLOCK_M_DQ)
        dkdv_programs = num_key_tiles * problem.batch * problem.kv_heads
        return TritonLaunch(
            self.module.backward_one_launch_kernel,
            (dkdv_programs + num_m_tiles * problem.batch * problem.q_heads,),
            *tensors[:13], *lists_kv, *lists_q,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
            *dq.stride(),
            problem.q_heads, problem.kv_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, plan.scale, plan.scale * LOG2_E,
            self._grad_scale(plan), num_key_tiles, num_m_tiles, dkdv_programs,
            *self._extra_args(plan, extras), *self._grad_args(slots, extra_grads),
            EXTRA_GRADS=extra_grads, BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N,
            BLOCK_M_DQ=config.BLOCK_M_DQ, BLOCK_N_DQ=config.BLOCK_N_DQ,
            **self._backward_common(plan, q),
            on_compile=lambda compiled: remember_launch(f"{self.name}-bwd-one-launch", compiled))


class BlockMask:
    """A compiled cascade's block mask for one call's shapes, configs and mask inputs: the tile
    lists of the forward, dK/dV and dQ tile shapes (CompiledAttention.block_mask)."""

    __slots__ = ("digest", "problem", "forward_config", "backward_config", "lists")

    def __init__(self, digest, problem, forward_config, backward_config, lists):
        self.digest = digest
        self.problem = problem
        self.forward_config = forward_config
        self.backward_config = backward_config
        self.lists = lists

    def lists_for(self, compiled, plan: LaunchPlan, key) -> tuple:
        if (self.digest != compiled.generated.digest or self.problem != plan.problem
                or self.forward_config != plan.forward_config
                or self.backward_config != plan.backward_config or key not in self.lists):
            raise ShapeError(f"{compiled.name}: block_mask was built for {self.problem.describe()} "
                             f"with configs {self.forward_config}, {self.backward_config} (kernel "
                             f"{self.digest}); this call is {plan.problem.describe()} with "
                             f"{plan.forward_config}, {plan.backward_config}: build it for this call")
        return self.lists[key]

    def __repr__(self) -> str:
        return f"<BlockMask of {self.problem.describe()} ({self.digest})>"


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
        def forward(ctx, kernel, plan, block_mask, q, k, v, *extras):
            out, lse = kernel.forward(plan, q, k, v, extras, block_mask)
            ctx.save_for_backward(q, k, v, out, lse, *extras)
            ctx.kernel, ctx.plan, ctx.block_mask = kernel, plan, block_mask
            ctx.mark_non_differentiable(lse)
            return out, lse

        @staticmethod
        def backward(ctx, grad_out, grad_lse):
            q, k, v, out, lse, *extras = ctx.saved_tensors
            wanted = ctx.needs_input_grad[6:]
            if not any(wanted):
                dq, dk, dv = ctx.kernel.backward(ctx.plan, grad_out, q, k, v, out, lse,
                                                 tuple(extras), block_mask=ctx.block_mask)
                return (None, None, None, dq, dk, dv) + (None,) * len(extras)
            dq, dk, dv, grads = ctx.kernel.backward(ctx.plan, grad_out, q, k, v, out, lse,
                                                    tuple(extras), extra_grads=True,
                                                    block_mask=ctx.block_mask)
            names = ctx.plan.tensor_names
            return (None, None, None, dq, dk, dv) + tuple(
                grads.get(name) if need else None for name, need in zip(names, wanted))

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
