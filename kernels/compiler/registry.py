"""Compiled cascades as kernels like the others: a forward and a backward KernelSpec per compiled
cascade (config space, declared constraints, launcher, the torch twin as the trial check), named
by the cascade's content so the tuning cache is keyed by what the kernel computes.

Torch-free: the CLI and the autotuner's dry runs register compiled cascades without a GPU stack.
"""

from __future__ import annotations

from typing import Any

from einsim.errors import ConfigError
from einsim.kernels.flash.config import (FlashBackwardConfig, FlashConfig, backward_default_config,
                                         backward_search_space, backward_shared_memory_bytes,
                                         default_config, search_space, shared_memory_bytes)
from einsim.kernels.registry import KERNELS, KernelSpec, make_attention_inputs, register
from einsim.problem import Problem

_COMPILED: dict[str, Any] = {}  # kernel-name stem -> CompiledAttention


def kernel_stem(compiled) -> str:
    """`cascade:<name>:<content hash>`: the cascade's own name for people, its content for the
    tuning cache (a changed cascade is a new kernel with its own tuned configs)."""
    return f"cascade:{compiled.cascade.name}:{compiled.form.content_hash[:10]}"


def compiled_kernel(name: str):
    """The CompiledAttention behind a registered compiled kernel (`...-fwd` or `...-bwd`)."""
    stem = name.rsplit("-", 1)[0]
    if stem not in _COMPILED:
        raise ConfigError(f"{name!r} is not a compiled cascade in this process; compile it first "
                          "(einsim.kernels.compile or --cascade FILE.yaml)")
    return _COMPILED[stem]


def _forward_reasons(config, problem, limits=None):
    from einsim.kernels.compiler.launch import forward_reasons

    return forward_reasons(config, problem, limits)


def _backward_reasons(config, problem, limits=None):
    from einsim.kernels.compiler.launch import backward_reasons

    return backward_reasons(config, problem, limits)


def _backward_space(problem: Problem, limits=None) -> list[FlashBackwardConfig]:
    return [c for c in backward_search_space(problem, limits) if not _backward_reasons(c, problem, limits)]


def register_compiled(compiled) -> tuple[KernelSpec, KernelSpec]:
    """Register (or re-register) the forward and backward kernels of a compiled cascade."""
    stem = kernel_stem(compiled)
    _COMPILED[stem] = compiled
    source = compiled.cascade.source
    cascade = compiled.cascade.name if source.startswith("<") else source

    def flops(problem: Problem, backward: bool = False) -> float:
        pairs = compiled.visible_pairs(problem)
        if pairs is None:
            pairs = problem.q_len * problem.kv_len
        per_pair = (2 * (3 * problem.head_dim + 2 * problem.v_head_dim) if backward
                    else 2 * (problem.head_dim + problem.v_head_dim))
        return float(problem.batch * problem.q_heads * pairs * per_pair)

    def make_inputs(problem, dtype=None, device="cuda", seed=0, *, requires_grad=False,
                    backward=False):
        inputs = make_attention_inputs(problem, dtype, device, seed,
                                       requires_grad=requires_grad or backward)
        inputs["compiled"] = stem
        inputs["tensors"] = example_tensors(compiled, problem, device, seed)
        return inputs

    forward = register(KernelSpec(
        name=f"{stem}-fwd", cascade=cascade, config_type=FlashConfig,
        default_config=default_config, search_space=search_space, check_config=_forward_reasons,
        shared_memory_bytes=shared_memory_bytes,
        launcher="einsim.kernels.compiler.registry:launch_forward",
        flops=flops, make_inputs=make_inputs, reference=reference_forward,
        description=f"compiled from cascade {compiled.cascade.name}: forward"))
    backward = register(KernelSpec(
        name=f"{stem}-bwd", cascade=cascade, config_type=FlashBackwardConfig,
        default_config=backward_default_config, search_space=_backward_space,
        check_config=_backward_reasons, shared_memory_bytes=backward_shared_memory_bytes,
        launcher="einsim.kernels.compiler.registry:launch_backward",
        flops=lambda problem: flops(problem, backward=True),
        min_bytes=lambda problem: problem.backward_min_bytes(),
        make_inputs=lambda *a, **kw: make_inputs(*a, backward=True, **kw),
        reference=reference_backward, direction="backward",
        description=f"compiled from cascade {compiled.cascade.name}: backward (dK/dV, dQ)"))
    return forward, backward


def example_tensors(compiled, problem: Problem, device="cuda", seed: int = 0) -> dict:
    """Extra inputs for timing and tuning: standard normal floats for inputs the score reads;
    sorted small integers (a few segments, as document ids or block flags) for inputs a filter
    compares. Imports torch."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    bound = compiled.bind(problem)
    in_mask = {a.tensor for flt in compiled.form.mask for c in flt.conditions
               for a in _accesses(c)}
    tensors = {}
    for name in compiled.extra_inputs:
        shape = compiled.cascade.tensor_shape(name, bound)
        if name in in_mask:
            values = torch.randint(0, 4, shape, generator=generator).sort(-1).values
        else:
            values = torch.randn(shape, generator=generator)
        tensors[name] = values.to(device)
    return tensors


def _accesses(node):
    from einsim.einsum_cascades.expr import Access
    from einsim.kernels.compiler.frontend import nodes

    return [n for n in nodes(node) if isinstance(n, Access)]


# -- launchers and references (the registry's "module:function" entry points) --------------------
def _prepared(inputs: dict, **configs):
    compiled = _COMPILED[inputs["compiled"]]
    q, k, v = (inputs[n].detach() for n in ("q", "k", "v"))
    plan, extras = compiled.plan(q, k, v, inputs.get("scale"), dict(inputs["tensors"]), **configs)
    return compiled, plan, extras, q, k, v


def launch_forward(config: FlashConfig, inputs: dict):
    compiled, plan, extras, q, k, v = _prepared(inputs, config=config)
    return compiled.forward(plan, q, k, v, extras)


def launch_backward(config: FlashBackwardConfig, inputs: dict):
    """The backward alone; the forward runs once, on first call, with its default config."""
    compiled, plan, extras, q, k, v = _prepared(inputs, backward_config=config)
    if "out" not in inputs:
        inputs["out"], inputs["lse"] = compiled.forward(plan, q, k, v, extras)
    return compiled.backward(plan, inputs["do"], q, k, v, inputs["out"], inputs["lse"], extras)


def reference_forward(inputs: dict):
    import torch

    compiled = _COMPILED[inputs["compiled"]]
    out = compiled.reference(*(inputs[n].detach() for n in ("q", "k", "v")),
                             scale=inputs.get("scale"), dtype=torch.float32, **inputs["tensors"])
    return out, None


def reference_backward(inputs: dict):
    import torch

    compiled = _COMPILED[inputs["compiled"]]
    leaves = tuple(inputs[n].detach().float().requires_grad_(True) for n in ("q", "k", "v"))
    out = compiled.reference(*leaves, scale=inputs.get("scale"), dtype=torch.float32,
                             **inputs["tensors"])
    return torch.autograd.grad(out, leaves, inputs["do"].float())


def registered() -> list[str]:
    """Names of the compiled kernels registered in this process."""
    return sorted(name for name in KERNELS if name.startswith("cascade:"))


__all__ = ["compiled_kernel", "example_tensors", "kernel_stem", "register_compiled", "registered"]
