"""Every Triton kernel einsim has, by name, with its cascade, config type, search space, resource
model and (lazily imported) launcher: what the CLI, the simulator and the autotuner read.

Plain Python: importing this module needs neither torch nor triton. Each kernel family registers
its kernels from its own torch-free `kernels/<family>/config.py` (see `_FAMILY_MODULES`), which
this module imports at the end, so `KERNELS` is complete whichever module is imported first.

Adding a kernel (docs/kernels.md § Registry):

    from einsim.kernels.registry import KernelSpec, register
    register(KernelSpec(
        name="attention-2pass-fwd", cascade="attention-2pass", config_type=MultipassConfig,
        default_config=default_config, search_space=search_space, check_config=check_config,
        shared_memory_bytes=shared_memory_bytes,
        launcher="einsim.kernels.multipass.forward:launch_2pass",  # fn(config, inputs) -> outputs
        description="..."))

`flops`, `min_bytes` and `make_inputs` default to the forward attention ones.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from einsim.errors import ConfigError, brief, did_you_mean
from einsim.kernels import tuned
from einsim.kernels.limits import DeviceLimits
from einsim.problem import Problem

# Kernel families, each a folder with a torch-free config.py that calls register().
_FAMILY_MODULES = (
    "einsim.kernels.flash.config",
    "einsim.kernels.multipass.config",
    "einsim.kernels.decode.config",
    "einsim.kernels.linear.config",
)
# What einsim's Triton kernels load and store (a Problem may name others for the simulator).
KERNEL_DTYPES = ("bf16", "fp16")


def _forward_flops(problem: Problem) -> float:
    return problem.forward_flops()


def _forward_min_bytes(problem: Problem) -> int:
    return problem.forward_min_bytes()


def make_attention_inputs(problem: Problem, dtype: str | None = None, device: str = "cuda",
                          seed: int = 0, *, requires_grad: bool = False,
                          scale: float | None = None) -> dict[str, Any]:
    """Random q, k, v (standard normal) for `problem`, plus the options every launcher reads.

    Returns {"q", "k", "v", "causal", "window", "scale"}; with requires_grad also "do" (the
    output gradient, for backward kernels). Imports torch.
    """
    import torch

    dtype = dtype or problem.dtype
    if dtype not in KERNEL_DTYPES:
        raise ConfigError(f"make_inputs: dtype must be one of {', '.join(KERNEL_DTYPES)}, got {dtype!r}")
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    # Drawn where they live: a CPU generator for CPU tensors (the interpreter's tests), the
    # GPU's own for CUDA tensors (a 64 x 32k decode cache is 4 G numbers: minutes on the CPU).
    on_gpu = str(device).startswith("cuda")
    generator = torch.Generator(device=device if on_gpu else "cpu").manual_seed(seed)

    def randn(*shape):
        if on_gpu:
            return torch.randn(*shape, generator=generator, device=device, dtype=torch_dtype)
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device=device,
                                                                               dtype=torch_dtype)

    p = problem
    inputs: dict[str, Any] = {
        "q": randn(p.batch, p.q_heads, p.q_len, p.head_dim),
        "k": randn(p.batch, p.kv_heads, p.kv_len, p.head_dim),
        "v": randn(p.batch, p.kv_heads, p.kv_len, p.v_head_dim),
        "causal": p.causal,
        "window": p.window,
        "scale": scale,
    }
    if requires_grad:
        for name in ("q", "k", "v"):
            inputs[name].requires_grad_(True)
        inputs["do"] = randn(p.batch, p.q_heads, p.q_len, p.v_head_dim)
    return inputs


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: its name, the library cascade it implements, and how to configure and run it.

    The callables are plain Python (no torch/triton); `launcher` is a "module:function" path
    imported on first launch. Launchers take (config, inputs) with inputs as `make_inputs`
    returns them and return the kernel's outputs (for forward kernels (out, lse)).
    """

    name: str
    cascade: str
    config_type: type
    default_config: Callable[[Problem], Any]
    search_space: Callable[[Problem, DeviceLimits | None], list]
    check_config: Callable[..., list[str]]
    shared_memory_bytes: Callable[[Any, Problem], int]
    launcher: str
    flops: Callable[[Problem], float] = _forward_flops
    min_bytes: Callable[[Problem], int] = _forward_min_bytes
    make_inputs: Callable[..., dict] = make_attention_inputs
    description: str = ""
    direction: str = "forward"  # "forward" | "backward": what `launch` times
    # What the launcher must return for `make_inputs`' inputs (its first output is compared), by
    # the oracle's formula; None: softmax attention (attention_reference_torch), as the
    # flash, multi-pass and decode kernels compute.
    reference: Callable[[dict[str, Any]], Any] | None = None
    # Takes a problem whose sequences have their own cache lengths (Problem.kv_lens)?
    per_sequence_lengths: bool = False

    def launch(self, config, inputs: dict[str, Any]):
        """Run the kernel with an explicit config (imports torch/triton on first call)."""
        module_name, _, function = self.launcher.partition(":")
        return getattr(importlib.import_module(module_name), function)(config, inputs)

    def config_from_dict(self, values: dict[str, Any]):
        """A config of this kernel from a JSON-like dict (unknown keys are a ConfigError)."""
        names = {f.name for f in dataclasses.fields(self.config_type)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{self.name}: unknown config fields {unknown}; expected {sorted(names)}")
        return self.config_type(**values)

    def config_reasons(self, config, problem: Problem,
                       limits: DeviceLimits | None = None) -> list[str]:
        """check_config plus the checks every kernel shares (config type, dtype)."""
        if not isinstance(config, self.config_type):
            return [f"expected a {self.config_type.__name__}, got {type(config).__name__}"]
        shared = ([] if problem.dtype in KERNEL_DTYPES else
                  [f"dtype {problem.dtype}: the kernels take {' or '.join(KERNEL_DTYPES)}"])
        if problem.kv_lens is not None and not self.per_sequence_lengths:
            shared.append("per-sequence cache lengths (kv_lens): this kernel attends kv_len keys in "
                          "every sequence; use decode-paged")
        return shared + list(self.check_config(config, problem, limits))

    def validate(self, config, problem: Problem, limits: DeviceLimits | None = None) -> None:
        """Raise ConfigError naming every reason `config` cannot run `problem`."""
        reasons = self.config_reasons(config, problem, limits)
        if reasons:
            raise ConfigError(f"{self.name}: config {config} cannot run {problem.describe()}: "
                              + "; ".join(reasons))

    def resolve_config(self, config, problem: Problem, limits: DeviceLimits | None = None,
                       lookup: TunedLookup | None = tuned.tuned_config):
        """`config` if given, else the tuned one `lookup` finds for this problem and GPU (by
        default the tuned-config store, einsim.kernels.tuned; None: no lookup), else the
        family's default. A looked-up config that cannot run here is passed over."""
        if config is not None:
            return config
        if lookup is not None:
            gpu = limits.name if limits is not None and limits.name != "generic" else None
            found = lookup(self, problem, gpu)
            if found is not None and not self.config_reasons(found, problem, limits):
                return found
        return self.default_config(problem)


# (spec, problem, GPU name or None) -> a tuned config or None: what resolve_config consults.
TunedLookup = Callable[["KernelSpec", Problem, "str | None"], Any]

@dataclass(frozen=True)
class PassTraffic:
    """Bytes one pass moves between the SMs and global memory, by tensor."""

    name: str
    reads: dict[str, int] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.reads.values()) + sum(self.writes.values())


@dataclass(frozen=True)
class TrafficKernelSpec(KernelSpec):
    """A KernelSpec that also states the HBM bytes it moves for a config, so the simulator can
    compare its pass/traffic prediction with the kernel (`hbm_bytes(problem, config, limits)`),
    and the per-pass breakdown (`pass_traffic(problem, config, limits)`)."""

    hbm_bytes: Callable[..., int] | None = None
    pass_traffic: Callable[..., tuple] | None = None
    passes: int = 1


KERNELS: dict[str, KernelSpec] = {}


def register(spec: KernelSpec) -> KernelSpec:
    """Add (or replace, on module reload) a kernel in KERNELS."""
    if not isinstance(spec, KernelSpec):
        raise TypeError(f"register() takes a KernelSpec, got {type(spec).__name__}")
    KERNELS[spec.name] = spec
    return spec


def get_kernel(name: str) -> KernelSpec:
    """The spec of kernel `name`, or a ConfigError naming the kernels there are."""
    try:
        return KERNELS[name]
    except KeyError:
        raise ConfigError(f"unknown kernel {brief(name)}{did_you_mean(name, KERNELS)}; "
                          f"known: {', '.join(sorted(KERNELS))}") from None


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


_load_families()
