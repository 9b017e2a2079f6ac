"""What a compiled spatial design is made of (docs/simulator.md §1): one Node per Einsum, the
role of each tensor, and the fusion groups with what they read, write and keep live."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    """One Einsum as the spatial model sees it (all counts for the whole workload)."""

    name: str
    group: int
    unit: str  # "pe_2d" | "pe_1d"
    pass_index: int
    points: float  # iteration points after filters (docs/simulator.md §3.1)
    ops: dict[str, float]  # operations by kind, whole workload
    cycles_per_point: float  # PE cycles one point costs on its unit (§3.2)
    row_extent: int  # extent of the rank on the 2D array's rows in one epoch (1 if not iterated)
    iterates_query: bool
    key_extent: int  # extent of the key rank it iterates in one epoch (0 if none)
    drains_rows: bool  # reduces the rank mapped on the 2D array's rows: its result drains (§4.3)
    deps: tuple[tuple[str, bool], ...]  # (producer in the same group, loop-carried)
    operands: tuple[str, ...]
    energy_per_point: float  # joules of compute for one point (§6)
    register_energy_per_cycle: float  # joules of register traffic per PE-cycle of work (§6)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    role: str  # "query" (per-query state), "key" (K, V), "plane" (M x P), "state" (E x F), "other"
    elements: float  # whole workload; an iterative tensor counts its current state only
    per_query: float  # elements per query row of one head (query, plane)
    per_key: float  # elements per key of one head (key)
    kv_scale: float = 1.0  # K/V indexed by query head under GQA: the share that is distinct data


@dataclass(frozen=True)
class Group:
    """A fusion group (kernel): its Einsums, what it reads from and writes to DRAM, what stays live
    across passes inside it."""

    index: int
    einsums: tuple[str, ...]
    inputs: tuple[str, ...]  # read from DRAM
    outputs: tuple[str, ...]  # written to DRAM
    resident_query: tuple[str, ...]  # per-query tensors kept on chip for a query block
    # plane tensors live across passes: (tensor, pass it is first available in, later passes
    # that read it, produced in this group (else read from DRAM))
    live: tuple[tuple[str, int, tuple[int, ...], bool], ...]
    uses_2d: bool
