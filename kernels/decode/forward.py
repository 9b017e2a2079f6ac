"""Front door of the split-KV decode kernel: check inputs, config and split plan, then launch
the split pass and the merge. Returns (out, lse) like the fused forward."""

from __future__ import annotations

from einsim.kernels.decode import config as cfg
from einsim.kernels.launch import plan_cache, tensor_key
from einsim.kernels.multipass.inputs import (check_tensors, device_limits, dot_in_fp32,
                                             interpreting, patch_interpreter, raise_if_unfit)
from einsim.kernels.registry import get_kernel


PLANS = plan_cache("decode")


class DecodePlan:
    """A decode call of one key, decided once: problem, config, split plan and launches."""

    __slots__ = ("problem", "config", "split", "scale", "dot_fp32", "launches", "descriptors")

    def __init__(self, problem, config: cfg.DecodeConfig, split: cfg.SplitPlan, scale) -> None:
        self.problem = problem
        self.config = config
        self.split = split
        self.scale = scale
        self.dot_fp32 = dot_in_fp32(problem)
        self.launches = None
        self.descriptors = None

    def run(self, q, k, v):
        from einsim.kernels.decode import splitkv

        return splitkv.run(self, q, k, v)


def decode_plan(q, k, v, causal=False, window=None, scale=None, config=None, limits=None) -> DecodePlan:
    """The cached plan for these tensors and options (checked and resolved on first use)."""
    key, plan = PLANS.find(lambda: (tensor_key(q), tensor_key(k), tensor_key(v), causal, window,
                                    scale, config, limits))
    if plan is not None:
        return plan
    spec = get_kernel("decode")
    problem = check_tensors(q, k, v, kernel=spec.name, causal=causal, window=window, scale=scale)
    limits = limits or device_limits(q)
    config = spec.resolve_config(config, problem, limits)
    raise_if_unfit(spec.config_reasons(config, problem, limits), spec.name, config, problem)
    if config.USE_TMA:
        _check_descriptor_alignment(k, v, config, problem)
    if interpreting():
        patch_interpreter()
    plan = DecodePlan(problem, config, cfg.split_plan(problem, config, limits), scale)
    return PLANS.store(key, plan)


def decode_attention(q, k, v, *, causal: bool = False, window=None, scale=None,
                     config: cfg.DecodeConfig | None = None, limits=None):
    """Attention of a few query rows (q [B, Hq, Nq, D], Nq small) against a KV cache
    (k/v [B, Hkv, Nk, D|Dv]) by the `decode-splitkv` cascade.

    `limits` (a DeviceLimits) drives the automatic split count; None reads the tensors' GPU
    (an H100's numbers on the interpreter). config None takes the tuned config for this
    problem, else `default_config`. Returns (out [B, Hq, Nq, Dv] in q's dtype, lse [B, Hq, Nq]
    fp32, natural log; -inf for rows that see no key). Checks, config and split plan are
    decided once per shape (a launch plan, docs/kernels.md).
    """
    if isinstance(window, list):
        window = tuple(window)
    return decode_plan(q, k, v, causal, window, scale, config, limits).run(q, k, v)


def _check_descriptor_alignment(k, v, config, problem) -> None:
    """Tensor descriptors need 16-byte aligned base addresses and strides (but the last)."""
    for name, tensor in (("k", k), ("v", v)):
        size = tensor.element_size()
        if tensor.data_ptr() % 16 or any(stride * size % 16 for stride in tensor.stride()[:-1]):
            raise_if_unfit([f"USE_TMA needs {name} 16-byte aligned (address and strides "
                            f"{tuple(tensor.stride())}); pass USE_TMA=False or a contiguous copy"],
                           "decode", config, problem)


def launch(config, inputs):
    """Registry launcher: inputs as KernelSpec.make_inputs returns them."""
    return decode_attention(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                            window=inputs.get("window"), scale=inputs.get("scale"), config=config)
