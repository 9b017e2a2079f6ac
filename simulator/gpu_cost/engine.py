"""The time of one GPU kernel launch: programs (CTAs) that each walk a run of tiles, scheduled
onto the SMs in grid order. Every GPU estimate of einsim — attention forward and backward of any
cascade, split-KV decode, GEMMs and element-wise operators of a layer — is a list of `Launch`es
timed here. Formulas: docs/simulator.md § GPU cost model.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from einsim.simulator.gpu_cost.roofs import GpuRoofs


WARM_WAVES = 4  # waves scheduled exactly at each end of a long periodic grid (see _makespan)


@dataclass(frozen=True)
class TileWork:
    """What one program does for one tile step (one K/V tile, one K-step of a GEMM), by unit."""

    macs: float = 0.0  # tensor-core multiply-accumulates
    mma_efficiency: float = 1.0  # fraction of the SM's measured MMA rate these instructions reach
    sfu_ops: float = 0.0  # special-function operations (exp2, rcp, tanh, ...)
    fma_ops: float = 0.0  # FP32 lane operations (add, max, mul, compare/select, convert)
    load_bytes: float = 0.0  # bytes brought into shared memory through L2 for this step

    def plus(self, other: "TileWork") -> "TileWork":
        """Both steps' work; the MMA efficiency is the MAC-weighted harmonic mean of the two."""
        macs = self.macs + other.macs
        seconds = (self.macs / self.mma_efficiency if self.macs else 0.0) + (
            other.macs / other.mma_efficiency if other.macs else 0.0)
        return TileWork(macs=macs, mma_efficiency=macs / seconds if seconds else 1.0,
                        sfu_ops=self.sfu_ops + other.sfu_ops, fma_ops=self.fma_ops + other.fma_ops,
                        load_bytes=self.load_bytes + other.load_bytes)

    def scaled(self, factor: float) -> "TileWork":
        return TileWork(self.macs * factor, self.mma_efficiency, self.sfu_ops * factor,
                        self.fma_ops * factor, self.load_bytes * factor)


@dataclass(frozen=True)
class ProgramGroup:
    """Programs that run the same code, in grid order: a pattern of programs (the i-th visits
    `full[i]` unmasked and `partial[i]` masked tiles), repeated `repeats` times (once per batch
    element and head: the query tiles of one head are the fastest grid dimension)."""

    full: np.ndarray
    partial: np.ndarray
    repeats: int
    full_tile: TileWork
    partial_tile: TileWork
    program_work: TileWork = TileWork()  # prologue and epilogue (Q load, final division, store)
    label: str = ""

    @property
    def programs(self) -> int:
        return int(self.full.size * self.repeats)

    @property
    def loops(self) -> np.ndarray:
        """Tile loops each program enters (a masked and an unmasked loop refill the pipeline
        separately)."""
        return (self.full > 0).astype(float) + (self.partial > 0).astype(float)


@dataclass(frozen=True)
class Launch:
    """One kernel launch: its program groups (dispatched in order), its resources and its HBM
    traffic. `programs_per_sm` is what the resources allow (resources.residency)."""

    name: str
    groups: tuple[ProgramGroup, ...]
    hbm_bytes: float  # reads + writes of the whole launch
    programs_per_sm: int = 1
    warpgroups: int = 1  # independent MMA/softmax instruction streams per program
    num_stages: int = 2  # tiles in flight: num_stages - 1 are prefetched ahead of the one in use
    spilled_fraction: float = 0.0  # reported, not priced: the measured configs show no spill cost beyond the fit's noise
    memory_only: bool = False  # an element-wise/copy kernel: no tile loop, HBM time + launch
    hbm_load_fraction: float = 0.0  # of the tile loads, the fraction that miss L2 (decode: all of them)
    hbm_efficiency: float = 1.0  # fraction of the HBM roof this kernel's streams reach (GEMV: fitted)
    program_latency_s: float | None = None  # this launch's fixed cost per program (None: the kernel style's)
    kernels: int = 1  # memory_only: that many back-to-back kernels share the bytes (a torch op sequence)
    # a dependent chain every tile step waits for whatever else runs (linear attention's state,
    # carried from chunk to chunk through dependent MMAs); programs sharing an SM overlap theirs
    step_latency_s: float = 0.0


@dataclass(frozen=True)
class EngineConstants:
    """The engine's own constants: properties of the machine and of how kernels pipeline, not of
    one kernel style (fitted with the styles: benchmarks/fit_gpu_model.py)."""

    load_latency_s: float  # latency of a tile load that hits L2, not hidden by prefetching (loaded GPU)
    hbm_extra_latency_s: float  # what a tile load that misses L2 (first touch, decode) waits beyond that
    latency_softness: float  # exponent of the smooth maximum of throughput and latency per tile


@dataclass(frozen=True)
class LaunchTime:
    """The launch's predicted time and where it goes."""

    name: str
    time_s: float
    makespan_s: float  # the programs' schedule on the SMs
    hbm_s: float  # the launch's HBM bytes at the HBM roof
    launch_s: float
    programs: int
    waves: float
    wave_efficiency: float  # busy slot-time / (makespan x slots)
    busy_s: dict[str, float] = field(default_factory=dict)  # unit -> whole-GPU busy seconds
    bound: str = ""


def launch_time(launch: Launch, roofs: GpuRoofs, overlap: float, constants: EngineConstants,
                program_latency_s: float) -> LaunchTime:
    """Time of `launch` on `roofs`: each program's SM time (its tiles' work on the busiest unit
    plus the part of the others that does not overlap, or the latency of its loads when fewer
    are in flight than hide it) plus a fixed per-program latency, scheduled greedily in grid
    order onto SMs x programs_per_sm slots; the HBM floor; one launch overhead. `overlap` is the
    kernel style's fraction of softmax hidden under the matmuls for one instruction stream."""
    hbm_s = launch.hbm_bytes / (roofs.hbm_bytes_per_s * launch.hbm_efficiency)
    if launch.memory_only or not launch.groups:
        return memory_launch_time(launch.name, launch.hbm_bytes, launch.kernels, roofs, constants)
    if launch.program_latency_s is not None:
        program_latency_s = launch.program_latency_s
    sms = roofs.sm_count
    per_sm = max(1, launch.programs_per_sm)
    streams = per_sm * max(1, launch.warpgroups)
    effective_overlap = 1.0 - (1.0 - overlap) / streams
    patterns: list[tuple[np.ndarray, int]] = []
    busy = {"tensor_core": 0.0, "sfu": 0.0, "cuda_core": 0.0, "l2": 0.0}
    for group in launch.groups:
        full_sm, full_wall = _tile_times(group.full_tile, roofs, effective_overlap, per_sm, launch, constants)
        part_sm, part_wall = _tile_times(group.partial_tile, roofs, effective_overlap, per_sm, launch, constants)
        program_sm, _ = _tile_times(group.program_work, roofs, effective_overlap, per_sm, launch, constants)
        # a slot's wall time: its share of the SM (per_sm programs share it) or its own load latency
        wall = group.full * full_wall + group.partial * part_wall + per_sm * program_sm
        wall = wall + program_latency_s + group.loops * constants.load_latency_s
        patterns.append((wall, group.repeats))
        for unit, seconds in _unit_seconds(group, roofs).items():
            busy[unit] += seconds
    slots = sms * per_sm
    makespan = _makespan(patterns, slots)
    work = sum(float(pattern.sum()) * repeats for pattern, repeats in patterns)
    programs = sum(group.programs for group in launch.groups)
    busy_gpu = {unit: seconds / sms for unit, seconds in busy.items()}
    busy_gpu["hbm"] = hbm_s
    time_s = max(makespan, hbm_s) + roofs.launch_overhead_s
    wave_efficiency = work / (makespan * slots) if makespan > 0 else 0.0
    return LaunchTime(launch.name, time_s, makespan, hbm_s, roofs.launch_overhead_s, programs,
                      math.ceil(programs / slots), wave_efficiency, busy_gpu,
                      _bound(busy_gpu, makespan, hbm_s, wave_efficiency, roofs.launch_overhead_s))


def memory_launch_time(name: str, hbm_bytes: float, kernels: int, roofs: GpuRoofs,
                       constants: EngineConstants) -> LaunchTime:
    """`kernels` memory-bound kernels moving `hbm_bytes` in all: the bytes at the HBM roof, and
    per kernel a launch and one round trip to HBM (no kernel finishes before its first load)."""
    hbm_s = hbm_bytes / roofs.hbm_bytes_per_s
    fixed = kernels * (roofs.launch_overhead_s + constants.load_latency_s + constants.hbm_extra_latency_s)
    return LaunchTime(name, hbm_s + fixed, 0.0, hbm_s, kernels * roofs.launch_overhead_s, 0, 0.0, 1.0,
                      {"hbm": hbm_s}, "hbm" if hbm_s >= fixed else "launch")


def _tile_times(work: TileWork, roofs: GpuRoofs, overlap: float, per_sm: int, launch: Launch,
                constants: EngineConstants) -> tuple[float, float]:
    """(SM seconds of one tile step, wall seconds of it in one of per_sm slots)."""
    sms = roofs.sm_count
    t_mma = work.macs / (roofs.matmul_macs_per_s / sms * work.mma_efficiency) if work.macs else 0.0
    t_soft = work.sfu_ops / (roofs.exp_per_s / sms) + work.fma_ops / (roofs.vector_ops_per_s / sms)
    t_l2 = work.load_bytes / (roofs.l2_bytes_per_s / sms)
    # the busiest unit, plus the part of the shorter of matmul and softmax that does not overlap
    sm_time = max(t_mma, t_soft, t_l2) + (1.0 - overlap) * min(t_mma, t_soft)
    if not work.load_bytes and not launch.step_latency_s:
        return sm_time, per_sm * sm_time
    latency_per_tile = 0.0
    if work.load_bytes:
        # a program keeps num_stages - 1 loads in flight: one tile per latency / (stages - 1) at best
        in_flight = max(1, launch.num_stages - 1)
        latency = constants.load_latency_s + launch.hbm_load_fraction * constants.hbm_extra_latency_s
        latency_per_tile = latency / in_flight
    floor = max(latency_per_tile, launch.step_latency_s)
    k = constants.latency_softness
    wall = ((per_sm * sm_time) ** k + floor ** k) ** (1.0 / k)
    return sm_time, wall


def _unit_seconds(group: ProgramGroup, roofs: GpuRoofs) -> dict[str, float]:
    """SM-seconds of each unit over the group's programs (for utilisation and 'bound by')."""
    sms = roofs.sm_count
    totals = {"tensor_core": 0.0, "sfu": 0.0, "cuda_core": 0.0, "l2": 0.0}
    tiles = {"full": float(group.full.sum()) * group.repeats, "partial": float(group.partial.sum()) * group.repeats}
    for kind, work in (("full", group.full_tile), ("partial", group.partial_tile)):
        n = tiles[kind]
        if work.macs:
            totals["tensor_core"] += n * work.macs / (roofs.matmul_macs_per_s / sms * work.mma_efficiency)
        totals["sfu"] += n * work.sfu_ops / (roofs.exp_per_s / sms)
        totals["cuda_core"] += n * work.fma_ops / (roofs.vector_ops_per_s / sms)
        totals["l2"] += n * work.load_bytes / (roofs.l2_bytes_per_s / sms)
    return totals


def _makespan(patterns: list[tuple[np.ndarray, int]], slots: int) -> float:
    """Makespan of program groups dispatched in grid order, each program to the slot that frees
    first (the block scheduler's behaviour). A group is a pattern of durations repeated once per
    head: uniform groups fill whole waves; otherwise the first and last repeats are scheduled
    exactly and the middle ones, whose schedule is periodic, advance every slot by their work
    divided among the slots (within about 1 % of the exact schedule; docs § "Scheduling")."""
    total = sum(pattern.size * repeats for pattern, repeats in patterns)
    if total == 0:
        return 0.0
    if len(patterns) == 1 and np.all(patterns[0][0] == patterns[0][0][0]):
        pattern, repeats = patterns[0]
        return math.ceil(total / slots) * float(pattern[0])
    free = [0.0] * min(slots, total)
    for pattern, repeats in patterns:
        sequence = pattern.tolist()
        warm = max(2, math.ceil(WARM_WAVES * slots / max(1, pattern.size)))
        if repeats <= 3 * warm:
            _dispatch(free, sequence * repeats)
            continue
        _dispatch(free, sequence * warm)
        shift = (repeats - 2 * warm) * float(pattern.sum()) / len(free)
        free[:] = [finish + shift for finish in free]  # a uniform shift keeps the heap order
        _dispatch(free, sequence * warm)
    return max(free)


def _dispatch(free: list[float], durations: list[float]) -> None:
    for seconds in durations:
        heapq.heapreplace(free, free[0] + seconds)


def _bound(busy: dict[str, float], makespan: float, hbm_s: float, wave_efficiency: float,
           launch_s: float) -> str:
    """The unit that sets the time: HBM when its floor wins, else the busiest SM unit, or
    'latency' when no unit is busy for most of the makespan, 'launch' for a near-empty kernel."""
    if max(makespan, hbm_s) < launch_s:
        return "launch"
    if hbm_s >= makespan:
        return "hbm"
    unit = max(("tensor_core", "sfu", "cuda_core", "l2"), key=lambda name: busy[name])
    return unit if busy[unit] >= 0.5 * makespan else "latency"
