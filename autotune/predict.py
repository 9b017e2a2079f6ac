"""The GPU cost model's prediction for one config of one of einsim's kernels: the kernel's config
becomes plain mapping data (tiles, warps, stages, its own shared-memory figure, splits) and the
one model in einsim.simulator.gpu_cost prices it with the `einsim` kernel style. This is the glue
between kernels/ and simulator/ (neither imports the other); the autotuner ranks with it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from einsim.einsum_cascades import load_cascade
from einsim.errors import ConfigError
from einsim.kernels.limits import DeviceLimits
from einsim.kernels.registry import KernelSpec, get_kernel
from einsim.problem import Problem
from einsim.simulator.gpu_cost import GpuMapping, gpu_roofs, kernel_cost
from einsim.simulator.gpu_cost.resources import RESERVED_SHARED_MEMORY
from einsim.targets import load_target

# each kernel family of einsim is one calibrated kernel style of the cost model
STYLES = {"attention-fwd": "einsim", "attention-bwd": "einsim", "attention-2pass-fwd": "einsim-multipass",
          "attention-3pass-fwd": "einsim-multipass", "decode": "einsim-decode",
          "decode-paged": "einsim-decode", "linear-fwd": "einsim", "linear-bwd": "einsim", "linear-decode": "einsim"}


@dataclass(frozen=True)
class KernelPrediction:
    """What the model says about one config of one kernel for one problem on one GPU."""

    kernel: str
    config: dict[str, Any]
    time_s: float  # predicted kernel time (inf when the config cannot run)
    fits: bool
    reasons: tuple[str, ...] = ()  # why it cannot run (empty when it can)
    smem_bytes: int = 0  # shared memory one program needs
    registers_per_thread: int = 0
    spilled_fraction: float = 0.0
    ctas_per_sm: int = 0  # resident programs per SM
    programs: int = 0  # programs (CTAs) of all launches
    waves: float = 0.0
    wave_efficiency: float = 0.0
    bound: str = ""  # the unit that sets the longest launch's time
    busy_s: dict[str, float] = field(default_factory=dict)  # unit -> whole-GPU busy seconds
    hbm_bytes: float = 0.0
    flops: float = 0.0
    notes: tuple[str, ...] = ()


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass (or dict) as a plain dict in field order."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return dict(config)


def device_limits_for(target: Any, dtype: str = "bf16") -> DeviceLimits:
    """The DeviceLimits the kernels' check_config reads, from the target's ceilings."""
    target = load_target(target) if isinstance(target, str) else target
    roofs = gpu_roofs(target, dtype)
    return DeviceLimits(name=roofs.target, sm_count=roofs.sm_count,
                        shared_memory_per_block=int(roofs.smem_bytes_per_sm - RESERVED_SHARED_MEMORY),
                        shared_memory_per_sm=int(roofs.smem_bytes_per_sm),
                        registers_per_sm=int(roofs.registers_bytes_per_sm // 4),
                        max_threads_per_sm=roofs.max_threads_per_sm, l2_bytes=int(roofs.l2_bytes))


def is_compiled(spec: KernelSpec) -> bool:
    """A kernel the cascade compiler made (einsim.kernels.compile): `cascade:<name>:<hash>-fwd|-bwd`."""
    return spec.name.startswith("cascade:")


def style_of(spec: KernelSpec) -> str:
    # compiled cascades run the loops of the hand-written fused kernels (kernels/compiler/template.py)
    if is_compiled(spec):
        return "einsim"
    if spec.name not in STYLES:  # a kernel the GPU model does not price yet: say so (it was a KeyError)
        raise ConfigError(f"{spec.name}: the GPU cost model has no kernel style for it yet (it prices "
                          f"{', '.join(sorted(STYLES))}), so the simulator cannot rank its configs")
    return STYLES[spec.name]


def kernel_cascade(spec: KernelSpec, name: str):
    """The Cascade a kernel runs: a compiled kernel's own (it may come from no file), else the
    library's or the file's by name."""
    if is_compiled(spec):
        from einsim.kernels.compiler.registry import compiled_kernel

        return compiled_kernel(spec.name).cascade
    return load_cascade(name)


def kernel_mapping(spec: KernelSpec, config: Any, problem: Problem,
                   limits: DeviceLimits | None = None) -> tuple[str, GpuMapping, str]:
    """(cascade name, mapping, direction) that stand for `config` of the kernel `spec`."""
    smem = int(spec.shared_memory_bytes(config, problem))
    if spec.name == "linear-decode":  # one token against the state: no pipeline, no stages
        return spec.cascade, GpuMapping(state_columns=config.BLOCK_C, kernel_style=style_of(spec),
                                        num_warps=config.num_warps, smem_bytes=smem), "forward"
    common = dict(kernel_style=style_of(spec), num_warps=config.num_warps, num_stages=config.num_stages, smem_bytes=smem)
    if spec.name == "attention-bwd" or (is_compiled(spec) and spec.direction == "backward"):
        dq = "atomic" if config.dq_atomic else ("one_launch" if config.one_launch else "separate")
        return spec.cascade, GpuMapping(dkdv_block_m=config.BLOCK_M, dkdv_block_n=config.BLOCK_N,
                                        dq_block_m=config.BLOCK_M_DQ, dq_block_n=config.BLOCK_N_DQ, dq=dq,
                                        **common), "backward"
    if spec.name in ("linear-fwd", "linear-bwd"):
        # the chunk walks (simulator/gpu_cost/linear.py): block_n is the chunk
        return spec.cascade, GpuMapping(block_n=config.CHUNK, state_columns=config.BLOCK_C, segment=config.SEGMENT,
                                        store_states=getattr(config, "store_states", None), **common), spec.direction
    if spec.name == "decode":
        from einsim.kernels.decode.config import split_plan

        splits = split_plan(problem, config, limits).num_splits
        # each split runs the fusemax cascade over its chunk; the merge is the model's split-KV merge
        return "fusemax", GpuMapping(block_m=config.BLOCK_M, block_n=config.BLOCK_N, kv_splits=splits,
                                     **common), "forward"
    if spec.name == "decode-paged":
        from einsim.kernels.decode.config import paged_block_m, paged_programs, stream_k_pieces

        # Stream-K over uniform lengths is a split-KV decode whose splits are the programs that
        # cover one (sequence, KV head, row tile) segment: the same model prices it.
        block_m = paged_block_m(problem)
        segments = problem.kv_heads * -(-problem.group_size * problem.q_len // block_m)
        lengths = list(problem.kv_lens or [problem.kv_len] * problem.batch)
        pieces = stream_k_pieces(lengths, segments, config.BLOCK_N,
                                 paged_programs(problem, config, limits))
        per_segment = max(1, round(sum(len(p) for p in pieces) / (problem.batch * segments)))
        return "fusemax", GpuMapping(block_m=block_m, block_n=config.BLOCK_N, kv_splits=per_segment,
                                     **common), "forward"
    multipass = {"multipass": "materialize" if getattr(config, "MATERIALIZE", False) else "recompute"}
    return spec.cascade, GpuMapping(block_m=config.BLOCK_M, block_n=config.BLOCK_N, **multipass, **common), "forward"


def balanced_equivalent(problem: Problem, config: Any) -> Problem:
    """The uniform-length problem the cost model prices for a kernel whose schedule balances
    key tiles over its programs whatever the per-sequence lengths (decode-paged's stream-K):
    every sequence at the mean number of key tiles (so the same total tiles, the same bytes).
    Problems without kv_lens are returned as they are."""
    if problem.kv_lens is None:
        return problem
    block_n = config.BLOCK_N
    tiles = sum(-(-n // block_n) for n in problem.kv_lens)
    length = min(problem.kv_len, max(1, -(-tiles // problem.batch) * block_n))
    return dataclasses.replace(problem, kv_len=length, kv_lens=None)


def predict_kernel(kernel_name: str, config: Any, problem: Problem, target: Any) -> KernelPrediction:
    """Predicted time, fit and resource use of `config` for `kernel_name` on `problem`.

    `target` is a Target or a preset name. Configs the kernel itself rejects and configs that
    cannot be resident on an SM come back with fits=False, time_s=inf and the reasons; nothing
    raises for a config that cannot run."""
    spec = get_kernel(kernel_name)
    target = load_target(target) if isinstance(target, str) else target
    if target.kind != "gpu":
        raise ConfigError(f"target {target.name!r} is not a GPU: the kernel model needs one")
    if isinstance(config, dict):
        config = spec.config_type(**config)
    limits = device_limits_for(target, problem.dtype)
    cfg = config_dict(config)
    reasons = tuple(spec.config_reasons(config, problem, limits))
    if reasons:
        return KernelPrediction(kernel_name, cfg, math.inf, False, reasons)
    cascade, mapping, direction = kernel_mapping(spec, config, problem, limits)
    cost = kernel_cost(kernel_cascade(spec, cascade), balanced_equivalent(problem, config), target,
                       mapping, direction)
    flops = spec.flops(problem) if spec.flops else problem.forward_flops()
    if not cost.fits:
        return KernelPrediction(kernel_name, cfg, math.inf, False, cost.reasons, cost.smem_bytes,
                                cost.registers_per_thread, cost.spilled_fraction)
    programs = sum(t.programs for t in cost.launches)
    slots = cost.roofs.sm_count * max(1, cost.programs_per_sm)
    longest = max(cost.launches, key=lambda t: t.time_s)
    return KernelPrediction(
        kernel=kernel_name, config=cfg, time_s=cost.time_s, fits=True, smem_bytes=cost.smem_bytes,
        registers_per_thread=cost.registers_per_thread, spilled_fraction=cost.spilled_fraction,
        ctas_per_sm=cost.programs_per_sm, programs=programs, waves=math.ceil(programs / slots) if programs else 0,
        wave_efficiency=longest.wave_efficiency, bound=cost.bound, busy_s=dict(cost.busy_s),
        hbm_bytes=cost.hbm_bytes, flops=flops, notes=cost.notes)


__all__ = ["KernelPrediction", "balanced_equivalent", "config_dict", "device_limits_for", "kernel_mapping", "predict_kernel"]
