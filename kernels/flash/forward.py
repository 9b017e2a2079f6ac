"""The fused 1-pass forward (`attention-fwd`): the fusemax cascade run as one Triton kernel —
an instance of the cascade compiler's template (kernels/compiler/template.py), compiled from the
library cascade of the call's mask (fusemax, attention-causal or attention-window).

Per query tile (BLOCK_M rows) and query head, walk the visible key tiles once, keeping the
running max RM, the running denominator RD and the unnormalised numerator RNV on chip (online
softmax with deferred normalisation, as FlashAttention-2); normalise once at the end and write
the output and the log-sum-exp. Scores are kept in base-2 units (log2(e) folded into the scale,
exp2 on the MUFU). Fully masked key tiles are never visited; the tiles on a causal or window
edge are masked, the tiles between them run without any mask (docs/kernels.md § Forward). This
module keeps the checks, the config resolution and the launch plan.
"""

from __future__ import annotations

import math

import torch
import triton

from einsim.errors import ConfigError
from einsim.kernels.flash.config import FlashConfig
from einsim.kernels.launch import DescriptorFactory, TritonLaunch, plan_cache, remember_launch, tensor_key
from einsim.kernel_rules import padded_head_dim
from einsim.kernels.registry import KERNELS
from einsim.kernels.runtime import (check_attention_inputs, device_limits,
                                    interpreter_needs_fp32_dots, interpreting, io_dtype, patch_interpreter,
                                    tma_compatible)

LOG2_E = 1.4426950408889634


def descriptor(tensor, block_rows: int, block_cols: int):
    """A 4-D tensor descriptor over [B, H, N, D] whose box is one [block_rows, block_cols] tile."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(tensor, list(tensor.shape), list(tensor.stride()),
                            [1, 1, block_rows, block_cols])


def resolve_config(kernel: str, config, problem, device):
    spec = KERNELS[kernel]
    limits = device_limits(device)
    config = spec.resolve_config(config, problem, limits)
    spec.validate(config, problem, limits)
    return config


def _check_output(name, tensor, shape, dtype, device):
    from einsim.errors import ShapeError

    if not hasattr(tensor, "shape") or tuple(tensor.shape) != tuple(shape) \
            or tensor.dtype != dtype or tensor.device != device:
        got = (f"{tuple(tensor.shape)} {tensor.dtype} on {tensor.device}" if hasattr(tensor, "shape")
               else type(tensor).__name__)
        raise ShapeError(f"attention-fwd: {name} must be {tuple(shape)} {dtype} on {device}, got {got}")
    if name == "lse" and not tensor.is_contiguous():
        raise ShapeError("attention-fwd: lse must be contiguous")


def mask_cascade(problem) -> tuple[str, dict[str, int]]:
    """The library cascade of a causal/window mask and its symbols: what the fused kernels are
    compiled from (causal with a window (l, r) keeps keys pos - l .. pos: window (l, 0))."""
    if problem.window is not None:
        left, right = problem.window
        return "attention-window", {"window_left": int(left),
                                    "window_right": 0 if problem.causal else int(right)}
    return ("attention-causal" if problem.causal else "fusemax"), {}


def template_kernels(problem):
    """(CompiledAttention, its size/symbol arguments) running `problem`'s mask: the fused
    kernels are instances of the cascade compiler's template (kernels/compiler), the cascade
    chosen by the mask; nothing else of the call changes."""
    from einsim.kernels.compiler import compile as compile_cascade

    name, symbols = mask_cascade(problem)
    compiled = compile_cascade(name)
    if compiled.generated.mask_mode != "ranges":  # (EINSIM_BLOCK_MASK=1, a measurement knob)
        raise ConfigError(f"attention-fwd: the fused kernels walk tile ranges; {name} was "
                          "generated with a block mask (unset EINSIM_BLOCK_MASK)")
    bound = compiled.bind(problem, symbols)
    generated = compiled.generated
    return compiled, [int(bound[r]) for r in generated.sizes] + [int(bound[s]) for s in generated.symbols]


class ForwardPlan:
    """Everything a forward call of one key needs, decided once: the checked problem, the
    resolved config, output shapes and the launch (docs/kernels.md § Launch plans)."""

    __slots__ = ("problem", "config", "scale", "out_shape", "use_tma", "descriptors", "launch")

    def __init__(self, problem, config: FlashConfig, scale, use_tma: bool) -> None:
        self.problem = problem
        self.config = config
        self.scale = 1.0 / math.sqrt(problem.head_dim) if scale is None else float(scale)
        self.out_shape = (problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim)
        self.use_tma = use_tma
        self.descriptors = None
        self.launch = None

    def run(self, q, k, v, out, lse) -> None:
        if self.use_tma:
            factories = self.descriptors
            if factories is None:
                config = self.config
                block_d = padded_head_dim(self.problem.head_dim)
                block_dv = padded_head_dim(self.problem.v_head_dim)
                factories = self.descriptors = (
                    DescriptorFactory(q, [1, 1, config.BLOCK_M, block_d]),
                    DescriptorFactory(k, [1, 1, config.BLOCK_N, block_d]),
                    DescriptorFactory(v, [1, 1, config.BLOCK_N, block_dv]),
                    DescriptorFactory(out, [1, 1, config.BLOCK_M, block_dv]))
            args = (factories[0](q), factories[1](k), factories[2](v), factories[3](out), lse)
        else:
            args = (q, k, v, out, lse)
        launch = self.launch
        if launch is None:
            launch = self.launch = self._make_launch(q, k, v, out, args)
        launch(*args, lse)  # lse again: the template's tile-list slot, unused by tile ranges

    def _make_launch(self, q, k, v, out, args) -> TritonLaunch:
        if interpreting():
            patch_interpreter()
        problem, config = self.problem, self.config
        compiled, mask_args = template_kernels(problem)
        num_m_tiles = triton.cdiv(problem.q_len, config.BLOCK_M)
        lse = args[-1]
        return TritonLaunch(
            compiled.module.forward_kernel, (num_m_tiles, problem.batch * problem.q_heads), *args,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            problem.q_heads, problem.group_size, problem.q_len, problem.kv_len,
            problem.head_dim, problem.v_head_dim, self.scale, self.scale * LOG2_E, num_m_tiles,
            lse, 0, 0, 0, 0, *mask_args, USE_TMA=self.use_tma,
            DOT_FP32=interpreter_needs_fp32_dots(problem.dtype),
            WARP_SPECIALIZE=bool(config.warp_specialize) and not interpreting(),
            IO_DTYPE=io_dtype(q), EXP_SPLIT=config.exp_split,
            BLOCK_M=config.BLOCK_M, BLOCK_N=config.BLOCK_N,
            BLOCK_D=padded_head_dim(problem.head_dim), BLOCK_DV=padded_head_dim(problem.v_head_dim),
            num_warps=config.num_warps, num_stages=config.num_stages,
            on_compile=lambda compiled: remember_launch("attention-fwd", compiled))


PLANS = plan_cache("attention-fwd")
# Tensor descriptors cost host time on every launch (Triton converts each one in Python: 11 us a
# forward call on the H200, W2) and pay off only where the kernel, not the host, sets the pace:
# below this much work (about 20 us of tensor-core time) plans use pointer loads, whatever
# config.tma says. (Not under the interpreter, where host time means nothing and the tests must
# run the descriptor path on tiny shapes.)
TMA_MIN_FLOPS = 1e10


def forward_plan(q, k, v, causal=False, window=None, scale=None, config=None, out=None,
                 lse=None) -> ForwardPlan:
    """The cached plan for these tensors and options, built (inputs checked, config resolved)
    on first use. Raises ShapeError/ConfigError for bad input, whether cached or not."""
    key, plan = PLANS.find(lambda: (
        tensor_key(q), tensor_key(k), tensor_key(v), causal, window, scale, config,
        None if out is None else tensor_key(out), None if lse is None else tensor_key(lse)))
    if plan is not None:
        return plan
    problem = check_attention_inputs(q, k, v, kernel="attention-fwd", causal=causal,
                                     window=window, scale=scale)
    config = resolve_config("attention-fwd", config, problem, q.device)
    plan = ForwardPlan(problem, config, scale, bool(config.tma) and tma_compatible(q, k, v)
                       and (interpreting() or problem.forward_flops() >= TMA_MIN_FLOPS))
    return PLANS.store(key, plan)


def flash_forward(q, k, v, *, causal: bool = False, window=None, scale: float | None = None,
                  config: FlashConfig | None = None, out=None, lse=None):
    """Fused attention forward. q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv], any
    strides, fp16 or bf16. Returns (out [B, Hq, Nq, Dv] in q's dtype, lse [B, Hq, Nq] fp32,
    natural log). `out`/`lse` may be given (tests poison them to catch unwritten elements).

    Raises ShapeError for bad tensors and ConfigError for a config that cannot run, before any
    launch. The checks, the config and the launch are decided once per shape (a launch plan).
    """
    if window is not None and not isinstance(window, tuple):
        window = tuple(window) if isinstance(window, (list, tuple)) else window
    plan = forward_plan(q, k, v, causal, window, scale, config, out, lse)
    if out is None:
        out = torch.empty(plan.out_shape, dtype=q.dtype, device=q.device)
    else:
        _check_output("out", out, plan.out_shape, q.dtype, q.device)
    if lse is None:
        lse = torch.empty(plan.out_shape[:3], dtype=torch.float32, device=q.device)
    else:
        _check_output("lse", lse, plan.out_shape[:3], torch.float32, q.device)
    plan.run(q, k, v, out, lse)
    return out, lse


def launch_from_inputs(config: FlashConfig, inputs: dict):
    """The registry's launcher: inputs as KernelSpec.make_inputs returns them."""
    return flash_forward(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                         window=inputs.get("window"), scale=inputs.get("scale"), config=config)


__all__ = ["ForwardPlan", "flash_forward", "forward_plan", "launch_from_inputs"]
