"""A GPU's ceilings for one dtype, as the cost model, the roofline plots and the autotuner read
them: matmul FLOP/s per dtype, SFU and FP32 lane rates, HBM and L2 bandwidth, and the on-chip
capacities. Measured (attainable) figures are used where the target has them; a dtype without a
measurement is derated like the measured one (docs/simulator.md § GPU cost model, "Ceilings").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from einsim.errors import SpecError

# 16-bit formats whose measured/datasheet ratio derates the datasheet peak of an unmeasured dtype
_DERATE_FROM = ("bf16", "fp16")


@dataclass(frozen=True)
class GpuRoofs:
    """A GPU's ceilings for one dtype; every rate is for the whole chip."""

    target: str
    dtype: str
    matmul_flops: float  # FLOP/s on the tensor cores (2 FLOP per MAC)
    matmul_source: str  # "measured" | "derated (...)" | "datasheet" | "derived"
    exp_per_s: float  # SFU operations per second (MUFU.EX2)
    exp_source: str
    vector_ops_per_s: float  # FP32 lane operations per second (CUDA cores)
    vector_source: str
    hbm_bytes_per_s: float
    hbm_source: str  # "measured" | "datasheet"
    l2_bytes_per_s: float
    l2_source: str
    l2_bytes: float
    llc_bytes: float  # the largest on-chip cache in front of HBM (the L2, or an Infinity Cache)
    smem_bytes_per_sm: float
    registers_bytes_per_sm: float
    sm_count: int
    clock_hz: float
    launch_overhead_s: float
    architecture: str = "hopper"  # the GPU family (Target.architecture): which MMA instructions exist
    max_threads_per_sm: int = 2048

    @property
    def warp_size(self) -> int:
        """Threads per warp (NVIDIA) or wavefront (AMD CDNA)."""
        return 64 if self.architecture.startswith("cdna") else 32

    @property
    def matmul_macs_per_s(self) -> float:
        return self.matmul_flops / 2.0


def gpu_roofs(target: Any, dtype: str | None = None, source: str = "measured") -> GpuRoofs:
    """Ceilings of a GPU target for `dtype`: `source="measured"` uses the preset's measured
    figures where it has them (derating an unmeasured matmul dtype by the measured/datasheet
    ratio of bf16 or fp16), the datasheet elsewhere; `"datasheet"` never uses measurements."""
    if target.kind != "gpu":
        raise SpecError(f"{target.source_path or target.name}: kind: {target.kind!r} is not a GPU; the GPU model "
                        "needs a target of kind: gpu")
    if source not in ("measured", "datasheet"):
        raise SpecError(f"GPU roofs: source must be 'measured' or 'datasheet', got {source!r}")
    dtype = dtype or target.default_dtype
    macs, matmul_source = matmul_peak(target, dtype, source)
    exps, exp_source = target.peak_ops_per_s(target.unit("exp"), "fp32", source)
    vector, vector_source = target.peak_ops_per_s(target.unit("vector"), "fp32", source)
    levels = gpu_levels(target)
    hbm, l2 = levels["hbm"], levels["l2"]
    return GpuRoofs(
        target=target.name, dtype=dtype,
        matmul_flops=2.0 * macs, matmul_source=matmul_source,
        exp_per_s=exps, exp_source=exp_source,
        vector_ops_per_s=vector, vector_source=vector_source,
        hbm_bytes_per_s=hbm.bandwidth(source), hbm_source=_bandwidth_source(hbm, source),
        l2_bytes_per_s=l2.bandwidth(source), l2_source=_bandwidth_source(l2, source),
        l2_bytes=l2.total_capacity_bytes,
        llc_bytes=levels["llc"].total_capacity_bytes,
        smem_bytes_per_sm=levels["shared_memory"].capacity_bytes,
        registers_bytes_per_sm=levels["registers"].capacity_bytes,
        sm_count=target.parallel_units, clock_hz=target.clock_hz,
        launch_overhead_s=target.launch_overhead_s,
        architecture=target.architecture or "hopper",
    )


def matmul_peak(target: Any, dtype: str, source: str = "measured") -> tuple[float, str]:
    """(MAC/s, source) of the tensor cores for `dtype`. A dtype the preset measured uses the
    measurement; one it did not (fp8 beside a measured bf16) gets its datasheet peak times the
    measured/datasheet ratio of the measured 16-bit format, so every dtype is treated alike."""
    unit = target.unit("matrix")
    macs, used = target.peak_ops_per_s(unit, dtype, source)
    if source != "measured" or used.startswith("measured"):
        return macs, used
    for reference in _DERATE_FROM:
        measured = unit.measured_peak.get(reference)
        datasheet = unit.datasheet_peak.get(reference)
        if measured and datasheet and reference != dtype and dtype in unit.ops_per_cycle:
            ratio = measured / datasheet
            return macs * ratio, f"derated ({used} x {ratio:.3f}, the measured/datasheet ratio of {reference})"
    return macs, used


def _bandwidth_source(level: Any, source: str) -> str:
    return "measured" if source == "measured" and level.measured_bandwidth_bytes_per_s else "datasheet"


SHARED_MEMORY_NAMES = ("shared_memory", "lds", "smem")


def gpu_levels(target: Any) -> dict[str, Any]:
    """Every memory level of a GPU target by role, innermost first: `registers`, `shared_memory`
    (also called lds/smem), `caches` (every level between it and HBM: L2, an Infinity Cache...),
    `l2` (the first cache), `llc` (the last and largest), `hbm` (the outermost). Levels are found
    by name, else by position (registers first, shared memory second, HBM last)."""
    levels = list(target.memory_levels)
    names = [level.name for level in levels]
    registers = names.index("registers") if "registers" in names else 0
    shared = next((names.index(n) for n in SHARED_MEMORY_NAMES if n in names), min(1, len(levels) - 1))
    hbm = len(levels) - 1
    caches = levels[max(registers, shared) + 1:hbm] or [levels[hbm]]
    return {"registers": levels[registers], "shared_memory": levels[shared], "caches": caches, "l2": caches[0],
            "llc": max(caches, key=lambda level: level.total_capacity_bytes), "hbm": levels[hbm]}
