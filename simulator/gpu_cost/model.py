"""The one GPU cost model's entry point: (cascade, problem, target, mapping) -> the kernel's time,
whether it can run, and where the time goes. The simulator's GPU estimate, the autotuner's
ranking and the roofline all read this (docs/simulator.md § GPU cost model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from einsim.errors import ConfigError
from einsim.simulator.gpu_cost.attention import KernelLaunches, backward_launches, forward_launches
from einsim.simulator.gpu_cost.cascade_plan import pass_plan
from einsim.simulator.gpu_cost.engine import LaunchTime, launch_time
from einsim.simulator.gpu_cost.mapping import GpuMapping, gpu_mapping
from einsim.simulator.gpu_cost.roofs import GpuRoofs, gpu_roofs
from einsim.simulator.gpu_cost.styles import FittedModel, fitted

DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class KernelCost:
    """What the model says about one kernel (all its launches) for one problem on one GPU."""

    time_s: float  # inf when the mapping cannot run
    fits: bool
    reasons: tuple[str, ...]  # why it cannot run (empty when it can)
    launches: tuple[LaunchTime, ...]
    busy_s: dict[str, float]  # unit -> whole-GPU busy seconds over all launches
    bound: str  # the unit that sets the time of the longest launch
    hbm_bytes: float
    programs_per_sm: int
    smem_bytes: int
    registers_per_thread: int
    spilled_fraction: float
    roofs: GpuRoofs
    kernel_style: str
    plan: KernelLaunches = field(repr=False, compare=False)
    notes: tuple[str, ...] = ()

    @property
    def utilization(self) -> dict[str, float]:
        """Busy fraction of the kernel's time of each unit (consistent with `bound`)."""
        if not self.time_s or self.time_s == float("inf"):
            return {unit: 0.0 for unit in self.busy_s}
        return {unit: seconds / self.time_s for unit, seconds in self.busy_s.items()}


def kernel_cost(cascade: Any, problem: Any, target: Any, mapping: Any = None, direction: str = "forward",
                model: FittedModel | None = None) -> KernelCost:
    """The cost of running `cascade` (a softmax-attention cascade) for `problem` on the GPU
    `target` under `mapping` (a GpuMapping, dict, YAML path or None for the style's defaults).
    `direction="backward"` prices the gradient kernels of the same attention."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if not pass_plan(cascade).is_attention:
        raise ConfigError(f"{getattr(cascade, 'source', cascade)}: the fused-kernel GPU model takes a softmax-attention "
                          "cascade (an exp over the key and query ranks, inputs streamed along the key rank)")
    plan_mapping: GpuMapping = gpu_mapping(mapping)
    model = model or fitted()
    roofs = gpu_roofs(target, problem.dtype, plan_mapping.roofs)
    build = forward_launches if direction == "forward" else backward_launches
    plan = build(cascade, problem, plan_mapping, roofs, model)
    return cost_of(plan, roofs, model)


def bound_by(busy: dict[str, float], time_s: float, launch_s: float) -> str:
    """What the kernel is bound by, consistent with the utilisation beside it: the busiest unit
    or memory when it is busy for at least half the time; else "launch" when launch overheads
    are most of the time, else "latency" (programs wait on loads and their own fixed costs)."""
    unit = max(busy, key=lambda name: busy[name]) if busy else ""
    if unit and busy[unit] >= 0.5 * time_s:
        return unit
    return "launch" if launch_s >= 0.5 * time_s else "latency"


def cost_of(plan: KernelLaunches, roofs: GpuRoofs, model: FittedModel) -> KernelCost:
    """Time every launch of a plan and sum them (launches of one kernel run one after another)."""
    fit = plan.residency
    if fit.reasons:
        return KernelCost(float("inf"), False, fit.reasons, (), {}, "does not fit", 0.0, 0, fit.smem_bytes,
                          fit.registers_per_thread, fit.spilled_fraction, roofs, plan.kernel_style.name, plan,
                          plan.notes)
    times = tuple(launch_time(launch, roofs, plan.overlap, model.engine, plan.kernel_style.fit.program_latency_s)
                  for launch in plan.launches)
    busy: dict[str, float] = {}
    for timed in times:
        for unit, seconds in timed.busy_s.items():
            busy[unit] = busy.get(unit, 0.0) + seconds
    total = sum(t.time_s for t in times)
    notes = list(plan.notes)
    if fit.spilled_fraction:
        notes.append(f"{fit.spilled_fraction:.0%} of a thread's tile state spills to local memory")
    return KernelCost(
        time_s=total, fits=True, reasons=(), launches=times, busy_s=busy,
        bound=bound_by(busy, total, sum(t.launch_s for t in times)), hbm_bytes=sum(launch.hbm_bytes for launch in plan.launches),
        programs_per_sm=fit.programs_per_sm, smem_bytes=fit.smem_bytes, registers_per_thread=fit.registers_per_thread,
        spilled_fraction=fit.spilled_fraction, roofs=roofs, kernel_style=plan.kernel_style.name, plan=plan,
        notes=tuple(notes))
