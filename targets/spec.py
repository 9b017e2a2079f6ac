"""The typed, frozen form of a hardware target: compute units by kind, memory levels innermost to
outermost, clock and parallel units. Built only by einsim.targets.loader, which validates every field.

Conventions (docs/targets.md): quantities are SI base units (bytes, bytes/s, Hz, joules); a matrix
unit's operation is one multiply-accumulate (MAC = 2 FLOP); capacities are per instance, bandwidths
are totals over all instances; datasheet peaks and measured (attainable) ceilings are kept apart so
that a model states which one it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

COMPUTE_KINDS = ("matrix", "vector", "exp")
TARGET_KINDS = ("gpu", "spatial")
DATAFLOWS = ("unfused", "flat", "fusemax")
# GPU architecture families: which MMA instructions and kernel designs exist (docs/targets.md)
ARCHITECTURES = ("hopper", "ampere", "cdna3")
OP_KINDS = ("mac", "mul", "add", "sub", "max", "min", "div", "exp")
PEAK_SOURCES = ("measured", "datasheet", "derived")


@dataclass(frozen=True)
class ComputeUnit:
    """One class of compute unit (tensor cores, CUDA cores, SFUs, a 2D or 1D PE array)."""

    name: str
    kind: str  # "matrix" | "vector" | "exp"
    count: int  # instances per parallel unit (per SM on a GPU; PEs of the array on a spatial target)
    ops_per_cycle: Mapping[str, float]  # per instance, by dtype; matrix units count MACs
    shape: tuple[int, ...] | None = None  # PE array rows x cols (matrix) or length (vector)
    via: str | None = None  # an exp "unit" computed on another unit (FuseMax: exp on the 2D array)
    ops_per_exp: float = 1.0  # operations of `via` one exp costs (FuseMax: 6 sequential MACs)
    datasheet_peak: Mapping[str, float] = field(default_factory=dict)  # ops/s, whole target
    measured_peak: Mapping[str, float] = field(default_factory=dict)  # ops/s, whole target
    energy_per_op: Mapping[str, float] = field(default_factory=dict)  # joules per op, by dtype
    energy_per_op_kind: Mapping[str, float] = field(default_factory=dict)  # joules by op kind (mac, add, max, div, exp, ...)
    notes: str = ""

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.count))


@dataclass(frozen=True)
class MemoryLevel:
    """One level of the memory hierarchy (registers, shared memory / SRAM, L2 / global buffer, HBM)."""

    name: str
    capacity_bytes: float  # per instance
    instances: int  # in the whole target (132 shared memories on an H100, 1 HBM)
    bandwidth_bytes_per_s: float  # datasheet or architectural, all instances together
    read_energy_j_per_byte: float
    write_energy_j_per_byte: float
    measured_bandwidth_bytes_per_s: float | None = None  # attainable, all instances together
    notes: str = ""
    # a PE's register file: word reads and writes per cycle of work (spatial models, §6): 2 and 1
    # for one shared file (two operands in, the result out); an Eyeriss-style PE with one
    # single-entry file per operand and one for the partial sum fills and reads each: 3 and 3
    reads_per_cycle: float = 2.0
    writes_per_cycle: float = 1.0

    @property
    def total_capacity_bytes(self) -> float:
        return self.capacity_bytes * self.instances

    def bandwidth(self, source: str = "measured") -> float:
        """Measured (attainable) bandwidth where the preset has one and source allows it."""
        if source == "measured" and self.measured_bandwidth_bytes_per_s is not None:
            return self.measured_bandwidth_bytes_per_s
        return self.bandwidth_bytes_per_s

    def __hash__(self) -> int:
        return hash((self.name, self.capacity_bytes, self.instances))


@dataclass(frozen=True)
class Target:
    """A GPU or a spatial accelerator, as described by one YAML file."""

    name: str
    kind: str  # "gpu" | "spatial"
    clock_hz: float
    word_bytes: int
    parallel_units: int  # SMs on a GPU; 1 on a spatial accelerator (its arrays are its units)
    parallel_unit_name: str
    compute_units: Mapping[str, ComputeUnit]
    memory_levels: tuple[MemoryLevel, ...]  # innermost -> outermost; the last one is off-chip
    description: str = ""
    display_name: str = ""  # what figures and reports call it ("NVIDIA H100 SXM"); `label` falls back to name
    default_dtype: str = "bf16"
    launch_overhead_s: float = 0.0  # fixed cost per kernel launch (GPU) or per invocation
    dataflow: str | None = None  # spatial designs: "unfused" | "flat" | "fusemax" (None: derived by the model)
    architecture: str | None = None  # GPUs: "hopper" | "ampere" | "cdna3" (which MMA instructions exist)
    sources: tuple[str, ...] = ()
    source_path: str = ""  # the file it was loaded from

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.source_path))

    @property
    def label(self) -> str:
        """The human name for titles and legends: `display_name`, else the file's `name`."""
        return self.display_name or self.name

    # --- lookups the models use ---------------------------------------------------------------
    def memory(self, name: str) -> MemoryLevel:
        for level in self.memory_levels:
            if level.name == name:
                return level
        raise KeyError(f"target {self.name} has no memory level {name!r}")

    @property
    def offchip(self) -> MemoryLevel:
        """The outermost level (HBM / DRAM): traffic_bytes counts bytes across it."""
        return self.memory_levels[-1]

    def units_of_kind(self, kind: str) -> list[ComputeUnit]:
        return [unit for unit in self.compute_units.values() if unit.kind == kind]

    def unit(self, kind: str) -> ComputeUnit:
        """The (first) unit of a kind; every target has one matrix, one vector and one exp unit."""
        units = self.units_of_kind(kind)
        if not units:
            raise KeyError(f"target {self.name} has no {kind} unit")
        return units[0]

    def derived_peak(self, unit: ComputeUnit, dtype: str) -> float:
        """ops/s from the architecture: ops_per_cycle x count x parallel units x clock."""
        per_cycle = unit.ops_per_cycle.get(dtype)
        if per_cycle is None:
            raise KeyError(f"{self.name}: unit {unit.name} has no ops_per_cycle for dtype {dtype!r}")
        return per_cycle * unit.count * self.parallel_units * self.clock_hz

    def peak_ops_per_s(self, unit: ComputeUnit | str, dtype: str | None = None, source: str = "measured") -> tuple[float, str]:
        """(ops/s, which source was used) for `unit`: source 'measured' falls back to 'datasheet',
        which falls back to 'derived'. For an exp unit computed `via` another unit the result is
        exps/s = that unit's ops/s / ops_per_exp."""
        if isinstance(unit, str):
            unit = self.compute_units[unit]
        dtype = dtype or self.default_dtype
        if unit.via is not None:
            host = self.compute_units[unit.via]
            ops, used = self.peak_ops_per_s(host, dtype, source)
            return ops / unit.ops_per_exp, f"{used} ({host.name} / {unit.ops_per_exp:g})"
        if source not in PEAK_SOURCES:
            raise ValueError(f"source must be one of {PEAK_SOURCES}, got {source!r}")
        suffix = ""
        if dtype not in unit.ops_per_cycle:
            dtype = _fallback_dtype(unit, dtype)
            suffix = f" ({dtype})"
        if source == "measured" and dtype in unit.measured_peak:
            return unit.measured_peak[dtype], "measured" + suffix
        if source in ("measured", "datasheet") and dtype in unit.datasheet_peak:
            return unit.datasheet_peak[dtype], "datasheet" + suffix
        return self.derived_peak(unit, dtype), "derived" + suffix

    def energy_per_op(self, unit: ComputeUnit | str, dtype: str | None = None, op_kind: str | None = None) -> float:
        """Joules per operation of `unit`: its energy_per_op_kind[op_kind] when given and listed,
        else energy_per_op[dtype]; an exp via another unit costs ops_per_exp of that unit's MACs."""
        if isinstance(unit, str):
            unit = self.compute_units[unit]
        dtype = dtype or self.default_dtype
        if unit.via is not None:
            return self.energy_per_op(self.compute_units[unit.via], dtype, "mac") * unit.ops_per_exp
        if op_kind is not None and op_kind in unit.energy_per_op_kind:
            return unit.energy_per_op_kind[op_kind]
        if dtype in unit.energy_per_op:
            return unit.energy_per_op[dtype]
        if unit.energy_per_op:
            return unit.energy_per_op[_fallback_dtype(unit, dtype, unit.energy_per_op)]
        return 0.0


def _fallback_dtype(unit: ComputeUnit, dtype: str, table: Mapping[str, float] | None = None) -> str:
    """A 16-bit request falls back to its 16-bit sibling, then to fp32 (vector units and SFUs are
    specified in fp32 on GPUs: bf16 softmax math runs in fp32 registers)."""
    table = unit.ops_per_cycle if table is None else table
    for candidate in {"bf16": ("fp16", "fp32"), "fp16": ("bf16", "fp32")}.get(dtype, ("fp32",)) + tuple(table):
        if candidate in table:
            return candidate
    raise KeyError(f"unit {unit.name} has no figures for dtype {dtype!r}")
