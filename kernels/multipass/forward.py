"""Front doors of the 2-pass and 3-pass forward kernels: check inputs and config, then launch
every pass. Same call style as the fused forward; returns (out, lse)."""

from __future__ import annotations

from einsim.kernels.launch import plan_cache, tensor_key
from einsim.kernels import ops
from einsim.kernels.multipass import config as cfg
from einsim.kernels.multipass import three_pass, two_pass
from einsim.kernels.runtime import (check_attention_inputs, device_limits, interpreter_needs_fp32_dots,
                                    interpreting, patch_interpreter, raise_if_unfit)
from einsim.kernels.registry import get_kernel


PLANS = plan_cache("multipass")


class MultipassPlan:
    """A 2- or 3-pass call of one key, decided once: problem, config, launches."""

    __slots__ = ("passes", "problem", "config", "scale", "dot_fp32", "launches")

    def __init__(self, passes: int, problem, config: cfg.MultipassConfig, scale) -> None:
        self.passes = passes
        self.problem = problem
        self.config = config
        self.scale = scale
        self.dot_fp32 = interpreter_needs_fp32_dots(problem.dtype)
        self.launches = None

    def run(self, q, k, v):
        return (two_pass if self.passes == 2 else three_pass).run(self, q, k, v)


def _run(passes: int, q, k, v, causal, window, scale, config, limits=None):
    if isinstance(window, list):
        window = tuple(window)
    if limits is None and ops.traced(q):
        op = ops.attention_2pass if passes == 2 else ops.attention_3pass
        return op(q, k, v, bool(causal), window, scale, ops.config_json(config))
    key, plan = PLANS.find(lambda: (passes, tensor_key(q), tensor_key(k), tensor_key(v), causal,
                                    window, scale, config, limits))
    if plan is None:
        spec = get_kernel(f"attention-{passes}pass-fwd")
        problem = check_attention_inputs(q, k, v, kernel=spec.name, causal=causal, window=window, scale=scale)
        limits = limits or device_limits(q.device)
        config = spec.resolve_config(config, problem, limits)
        raise_if_unfit(spec.config_reasons(config, problem, limits), spec.name, config, problem)
        if interpreting():
            patch_interpreter()
        plan = MultipassPlan(passes, problem, config, scale)
        PLANS.store(key, plan)
    return plan.run(q, k, v)


def attention_2pass(q, k, v, *, causal: bool = False, window=None, scale=None,
                    config: cfg.MultipassConfig | None = None, limits=None):
    """Attention by the `attention-2pass` cascade. q [B, Hq, Nq, D], k/v [B, Hkv, Nk, D|Dv].

    config None takes the tuned config for this problem, else `default_config`. Returns
    (out [B, Hq, Nq, Dv] in q's dtype, lse [B, Hq, Nq] fp32, natural log; -inf for empty rows).
    """
    return _run(2, q, k, v, causal, window, scale, config, limits)


def attention_3pass(q, k, v, *, causal: bool = False, window=None, scale=None,
                    config: cfg.MultipassConfig | None = None, limits=None):
    """Attention by the `attention-3pass` cascade; same arguments and results as attention_2pass."""
    return _run(3, q, k, v, causal, window, scale, config, limits)


def launch_2pass(config, inputs):
    """Registry launcher: inputs as KernelSpec.make_inputs returns them."""
    return attention_2pass(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                           window=inputs.get("window"), scale=inputs.get("scale"), config=config)


def launch_3pass(config, inputs):
    return attention_3pass(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                           window=inputs.get("window"), scale=inputs.get("scale"), config=config)
