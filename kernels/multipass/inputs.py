"""Checks on the tensors and options a multi-pass or decode launcher receives, done before any
launch so that bad input is an einsim error, never a Triton or CUDA failure."""

from __future__ import annotations

import functools
import os

from einsim.errors import ConfigError, ShapeError
from einsim.kernels.problem import AttentionProblem, DeviceLimits

SUPPORTED_DTYPES = ("float16", "bfloat16")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_tensors(q, k, v, *, kernel: str, causal=False, window=None, scale=None) -> AttentionProblem:
    """The problem q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] pose, or a ShapeError."""
    import torch

    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor):
            raise ShapeError(f"{kernel}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.ndim != 4:
            raise ShapeError(f"{kernel}: {name} must be 4-D [batch, heads, length, head_dim], "
                             f"got shape {tuple(tensor.shape)}")
        if str(tensor.dtype).removeprefix("torch.") not in SUPPORTED_DTYPES:
            raise ShapeError(f"{kernel}: {name} has dtype {tensor.dtype}; expected torch.float16 "
                             "or torch.bfloat16")
        if tensor.numel() and tensor.stride(-1) != 1:
            raise ShapeError(f"{kernel}: {name} must be contiguous in its last dimension "
                             f"(strides {tuple(tensor.stride())}); call .contiguous()")
    if not (q.dtype == k.dtype == v.dtype):
        raise ShapeError(f"{kernel}: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ShapeError(f"{kernel}: q, k, v are on different devices: {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not interpreting():
        raise ShapeError(f"{kernel}: tensors are on {q.device}; the Triton kernels need a CUDA "
                         "device (or TRITON_INTERPRET=1 for the CPU interpreter)")
    batch, q_heads, q_len, head_dim = q.shape
    if k.shape[0] != batch or v.shape[0] != batch:
        raise ShapeError(f"{kernel}: batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ShapeError(f"{kernel}: k {tuple(k.shape)} and v {tuple(v.shape)} must share heads and length")
    kv_heads, kv_len = k.shape[1], k.shape[2]
    if k.shape[3] != head_dim:
        raise ShapeError(f"{kernel}: q and k head dims differ: {head_dim} vs {k.shape[3]}")
    if kv_heads == 0 or q_heads % kv_heads:
        raise ShapeError(f"{kernel}: query heads ({q_heads}) must be a multiple of key/value heads "
                         f"({kv_heads})")
    if min(batch, q_heads, q_len, kv_len) < 1:
        raise ShapeError(f"{kernel}: empty input: q {tuple(q.shape)}, k {tuple(k.shape)}")
    v_head_dim = v.shape[3]
    for name, dim in (("head_dim", head_dim), ("v head_dim", v_head_dim)):
        if not 16 <= dim <= 256:
            raise ShapeError(f"{kernel}: {name} {dim} is outside the supported 16..256")
    if window is not None:
        if len(tuple(window)) != 2 or min(window) < 0:
            raise ShapeError(f"{kernel}: window must be (left, right) with both >= 0, got {window!r}")
        window = (int(window[0]), int(window[1]))
    if scale is not None and not float(scale) > 0:
        raise ShapeError(f"{kernel}: scale must be positive, got {scale!r}")
    dtype = "bf16" if str(q.dtype).endswith("bfloat16") else "fp16"
    return AttentionProblem(batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len,
                            kv_len=kv_len, head_dim=head_dim, causal=bool(causal), window=window,
                            dtype=dtype, v_head_dim=None if v_head_dim == head_dim else v_head_dim)


def raise_if_unfit(reasons: list[str], kernel: str, config, problem: AttentionProblem) -> None:
    if reasons:
        raise ConfigError(f"{kernel}: config {config} cannot run {problem.describe()}: "
                          + "; ".join(reasons))


def device_limits(tensor) -> DeviceLimits:
    """Limits of the tensor's GPU (an H100's on the interpreter, so CI rejects what could not run)."""
    return _limits_of(tensor.device.type, tensor.device.index)


@functools.lru_cache(maxsize=None)
def _limits_of(device_type: str, index) -> DeviceLimits:
    # Cached: a decode step must not pay torch's property query on every call.
    if device_type != "cuda":
        return DeviceLimits.h100()
    return DeviceLimits.from_torch_device(f"cuda:{index if index is not None else 0}")


def dot_in_fp32(problem: AttentionProblem) -> bool:
    """Triton 3.6's interpreter returns garbage from tl.dot on two bf16 operands: upcast there.

    TODO(integration): use the fused forward's flag once kernels/flash/forward.py has one.
    """
    return interpreting() and problem.dtype == "bf16"


def patch_interpreter() -> None:
    """Let Triton 3.6's CPU interpreter run loops with runtime bounds under NumPy >= 2.4.

    The interpreter holds scalars as 1-element arrays and converts them with int(array), which
    NumPy 2.4 turns into a TypeError ("only 0-dimensional arrays can be converted to Python
    scalars") for every `range(lo, hi)` whose bounds are kernel arguments. Idempotent; a no-op
    once Triton takes .item() itself.
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


def scratch(shape, device):
    """fp32 HBM buffer for what one pass hands the next (tests poison it: every element a pass
    reads must have been written by the pass before)."""
    import torch

    return torch.empty(shape, device=device, dtype=torch.float32)


def empty_output(shape, device, dtype=None):
    """Output buffer (out, lse); tests poison it to catch elements a kernel never writes."""
    import torch

    return torch.empty(shape, device=device, dtype=dtype or torch.float32)
