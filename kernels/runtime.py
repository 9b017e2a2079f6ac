"""What every launcher does before a launch: check tensors into a Problem, know the
device's limits, detect Triton's CPU interpreter (and work around its known bugs), decide whether
tensor descriptors (TMA) can address the tensors. Imports torch; imports triton only to patch it.
"""

from __future__ import annotations

import functools
import math
import operator
import os

from einsim.errors import ConfigError, ShapeError, brief
from einsim.problem import Problem
from einsim.kernels.limits import DeviceLimits

_DTYPES = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}


def check_flag(value: object, name: str, kernel: str) -> bool:
    """`value` as a bool when it is one (or numpy's, or the integers 0 and 1); a ShapeError
    otherwise: `causal='no'` is truthy and ran a causal mask. A few isinstance checks: it runs on
    every call of the front door."""
    if value is True or value is False:
        return value
    kind = type(value)
    if (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ShapeError(f"{kernel}: {name} must be True or False, got {brief(value)}")


def check_scale(scale: object, kernel: str) -> None:
    """None (the kernel's default) or a positive finite number; a ShapeError otherwise (inf gave
    an all-NaN output; a bool is not a scale)."""
    if scale is None:
        return
    try:
        ok = not isinstance(scale, bool) and math.isfinite(float(scale)) and float(scale) > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ShapeError(f"{kernel}: scale must be a positive finite number, got {brief(scale)}")


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1 (kernels run on the CPU, tensors on the CPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreter_needs_fp32_dots(dtype: str) -> bool:
    """Triton 3.6's interpreter computes bf16 arithmetic and tl.dot on the raw uint16 bit patterns
    (triton-lang/triton#11584, #10945): launchers pass DOT_FP32=True so the kernels upcast bf16
    tiles right after loading. Never set on the GPU, where dots stay bf16 on the tensor cores."""
    return interpreting() and dtype == "bf16"


def patch_interpreter() -> None:
    """Let Triton 3.6's interpreter take loop bounds that are kernel arguments under NumPy 2.4.

    The interpreter keeps scalars as 1-element arrays and calls int(array) on range bounds, which
    NumPy >= 2.4 rejects ("only 0-dimensional arrays can be converted"). Idempotent.
    """
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "einsim_numpy_2_4", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched.einsim_numpy_2_4 = True
    interpreter._patch_lang_tensor = patched


@functools.lru_cache(maxsize=None)
def _limits_of(device_type: str, index: int | None) -> DeviceLimits:
    if device_type != "cuda":
        return DeviceLimits.h100()
    return DeviceLimits.from_torch_device(f"cuda:{index if index is not None else 0}")


def device_limits(device) -> DeviceLimits:
    """Limits of the tensor's device (an H100's on the CPU, so CI rejects what a GPU would)."""
    return _limits_of(device.type, device.index)


def dtype_name(tensor) -> str:
    return _DTYPES.get(str(tensor.dtype), str(tensor.dtype))


def check_attention_inputs(q, k, v, *, kernel: str, causal=False, window=None,
                           scale=None) -> Problem:
    """The Problem of q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv], or a
    ShapeError saying what is wrong. Any strides are accepted (kernels take them)."""
    import torch

    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor):
            raise ShapeError(f"{kernel}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.ndim != 4:
            raise ShapeError(f"{kernel}: {name} must be 4-D [batch, heads, length, head_dim], got "
                             f"shape {tuple(tensor.shape)}")
        if str(tensor.dtype) not in _DTYPES:
            raise ShapeError(f"{kernel}: {name} has dtype {tensor.dtype}; expected torch.float16 "
                             "or torch.bfloat16")
    if not q.dtype == k.dtype == v.dtype:
        raise ShapeError(f"{kernel}: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.device == k.device == v.device:
        raise ShapeError(f"{kernel}: q, k, v are on different devices: {q.device}, {k.device}, "
                         f"{v.device}")
    if q.device.type != "cuda" and not interpreting():
        raise ShapeError(f"{kernel}: tensors are on {q.device}; the Triton kernels need a CUDA "
                         "device (or TRITON_INTERPRET=1 for Triton's CPU interpreter)")
    batch, q_heads, q_len, head_dim = q.shape
    if k.shape[0] != batch or v.shape[0] != batch:
        raise ShapeError(f"{kernel}: batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ShapeError(f"{kernel}: k {tuple(k.shape)} and v {tuple(v.shape)} must have the same "
                         "heads and length")
    if k.shape[3] != head_dim:
        raise ShapeError(f"{kernel}: q and k head dims differ: {head_dim} vs {k.shape[3]}")
    kv_heads, kv_len, v_head_dim = k.shape[1], k.shape[2], v.shape[3]
    if min(batch, q_heads, kv_heads, q_len, kv_len, head_dim, v_head_dim) < 1:
        raise ShapeError(f"{kernel}: empty input: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if q_heads % kv_heads:
        raise ShapeError(f"{kernel}: query heads ({q_heads}) must be a multiple of key/value heads "
                         f"({kv_heads})")
    for name, dim in (("head_dim", head_dim), ("v head_dim", v_head_dim)):
        if not 16 <= dim <= 256:
            raise ShapeError(f"{kernel}: {name}={dim} is outside the supported 16..256")
    check_scale(scale, kernel)
    if window is not None:
        try:  # operator.index: whole numbers only (int(1.5) silently truncated the window)
            window = tuple(operator.index(w) for w in window if not isinstance(w, bool))
            ok = len(window) == 2 and min(window) >= 0
        except TypeError:
            ok = False
        if not ok:
            raise ShapeError(f"{kernel}: window must be (left, right), two whole numbers >= 0, "
                             f"got {brief(window)}") from None
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        # Batch and head offsets are 64-bit in the kernels; offsets inside one head are 32-bit.
        if tensor.shape[2] * abs(tensor.stride(2)) + tensor.shape[3] * abs(tensor.stride(3)) >= 2**31:
            raise ShapeError(f"{kernel}: {name} has more than 2^31 elements in one head "
                             f"(shape {tuple(tensor.shape)}, strides {tuple(tensor.stride())})")
    return Problem(
        batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len,
        head_dim=head_dim, causal=check_flag(causal, "causal", kernel), window=window, dtype=dtype_name(q),
        v_head_dim=None if v_head_dim == head_dim else v_head_dim)


def tma_compatible(*tensors) -> bool:
    """Can tensor descriptors address every tensor? (16-byte aligned base and strides, unit
    stride in the last dimension; sm_90+ on the GPU.) The interpreter emulates them on the CPU."""
    import torch

    for tensor in tensors:
        if tensor.stride(-1) != 1 or tensor.data_ptr() % 16:
            return False
        if any((s * tensor.element_size()) % 16 for s in tensor.stride()[:-1]):
            return False
    device = tensors[0].device
    if device.type == "cuda" and not interpreting():
        return torch.cuda.get_device_capability(device)[0] >= 9
    return interpreting()


def io_dtype(tensor):
    """The Triton element type a kernel reads and writes for `tensor`: bf16 for bf16, else fp16
    (the kernels take only these two; the input checks refuse the rest)."""
    import torch
    import triton.language as tl

    return tl.bfloat16 if tensor.dtype == torch.bfloat16 else tl.float16


def raise_if_unfit(reasons: list[str], kernel: str, config, problem: Problem) -> None:
    """A ConfigError naming the config, the problem and every reason it cannot run (none: returns)."""
    if reasons:
        raise ConfigError(f"{kernel}: config {config} cannot run {problem.describe()}: " + "; ".join(reasons))


def scratch(shape, device):
    """fp32 HBM buffer for what one launch hands the next (the multi-pass and decode kernels';
    tests poison it: every element a launch reads must have been written by the one before)."""
    import torch

    return torch.empty(shape, device=device, dtype=torch.float32)


def empty_output(shape, device, dtype=None):
    """Output buffer (out, lse) of the multi-pass and decode kernels; tests poison it to catch
    elements a kernel never writes."""
    import torch

    return torch.empty(shape, device=device, dtype=dtype or torch.float32)
