"""Triton attention kernels, one folder per algorithm family, each tied to its cascade.

Importing this package needs neither torch nor triton: the registry, config spaces and resource
models are plain Python so that the simulator and autotuner can reason about kernels on machines
without a GPU stack. Launchers import torch and triton when first called; `attention` (the
autograd-aware front door), `linear_attention` and `linear_attention_decode` are resolved on
first access.
"""

from einsim.kernels.limits import DeviceLimits
from einsim.kernels.registry import KERNELS, KernelSpec, get_kernel, register

__all__ = ["DeviceLimits", "KERNELS", "KernelSpec", "attention", "compile",
           "get_kernel", "linear_attention", "linear_attention_decode", "register"]


def __getattr__(name):
    if name == "attention":
        from einsim.kernels.interface import attention

        return attention
    if name == "linear_attention":
        from einsim.kernels.linear.chunk import linear_attention

        return linear_attention
    if name == "linear_attention_decode":
        from einsim.kernels.linear.decode import linear_attention_decode

        return linear_attention_decode
    if name == "compile":
        from einsim.kernels.compiler import compile

        return compile
    raise AttributeError(f"module 'einsim.kernels' has no attribute {name!r}")
