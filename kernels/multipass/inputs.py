"""What the multi-pass and decode launchers do before a launch: the shared input checks and
interpreter workarounds of einsim.kernels.runtime, config errors, and the HBM buffers they
allocate (through two functions the tests replace with NaN-filled ones)."""

from __future__ import annotations

from einsim.errors import ConfigError
from einsim.kernels import runtime
from einsim.problem import Problem
from einsim.kernels.limits import DeviceLimits


def check_tensors(q, k, v, *, kernel: str, causal=False, window=None, scale=None) -> Problem:
    """The problem q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] pose, or a ShapeError
    (the checks every launcher shares, einsim.kernels.runtime); any strides are fine."""
    return runtime.check_attention_inputs(q, k, v, kernel=kernel, causal=causal, window=window,
                                          scale=scale)


def raise_if_unfit(reasons: list[str], kernel: str, config, problem: Problem) -> None:
    if reasons:
        raise ConfigError(f"{kernel}: config {config} cannot run {problem.describe()}: "
                          + "; ".join(reasons))


def device_limits(tensor) -> DeviceLimits:
    """Limits of the tensor's GPU (an H100's on the interpreter, so CI rejects what could not run)."""
    return runtime.device_limits(tensor.device)


def dot_in_fp32(problem: Problem) -> bool:
    """The kernels' DOT_FP32 flag: Triton 3.6's interpreter mangles bf16 dots (runtime's note)."""
    return runtime.interpreter_needs_fp32_dots(problem.dtype)


def scratch(shape, device):
    """fp32 HBM buffer for what one pass hands the next (tests poison it: every element a pass
    reads must have been written by the pass before)."""
    import torch

    return torch.empty(shape, device=device, dtype=torch.float32)


def empty_output(shape, device, dtype=None):
    """Output buffer (out, lse); tests poison it to catch elements a kernel never writes."""
    import torch

    return torch.empty(shape, device=device, dtype=dtype or torch.float32)


interpreting = runtime.interpreting
patch_interpreter = runtime.patch_interpreter
