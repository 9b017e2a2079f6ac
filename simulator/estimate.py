"""What a simulation returns: the whole-cascade estimate and one row per Einsum.

Every number here is derived by a formula written down in docs/simulator.md; `notes` carries the
human-readable reasons (what spilled, which unit bounds the latency).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from einsim.jsonio import to_jsonable
from einsim.problem import Problem


@dataclass(frozen=True)
class EinsumEstimate:
    """One Einsum of the cascade as mapped on the target."""

    einsum: str  # the output tensor name, e.g. "QK"
    pass_index: int  # 1-based pass over the analysed rank in which it runs
    unit: str  # compute unit it is bound to, e.g. "tensor_core", "pe_2d", "pe_1d", "sfu"
    compute_ops: dict[str, float]  # operations by kind: mul, add, sub, div, exp, max
    traffic_bytes: float  # off-chip bytes this Einsum causes (reads + writes)
    buffer_bytes: float  # on-chip bytes it needs live
    latency_s: float  # its time alone on its unit(s) and memory (before overlap)
    energy_j: float


@dataclass(frozen=True)
class Estimate:
    """A cascade on a target for a workload and mapping."""

    cascade: str
    target: str
    problem: Problem
    passes: int
    buffer_bytes: float  # on-chip bytes the chosen mapping fills (uses) at the innermost shared level
    buffer_capacity_bytes: float
    fits: bool
    traffic_bytes: float  # total off-chip (DRAM/HBM) bytes, reads + writes
    traffic_by_level: dict[str, float]  # memory level -> bytes moved across it
    compute_ops: dict[str, float]  # totals by kind
    latency_s: float
    bound: str  # what limits latency: a memory level or a compute unit name
    utilization: dict[str, float]  # unit or memory level -> busy fraction of latency_s
    energy_j: float
    energy_by_component: dict[str, float]
    per_einsum: tuple[EinsumEstimate, ...] = ()
    notes: tuple[str, ...] = field(default=())
    mapping: dict = field(default_factory=dict)  # the mapping the model chose or was given (tiles, blocks, binding)
    # the least on-chip bytes the design runs in without spilling (spatial: one array-wide tile
    # of queries, docs/simulator.md §5.1); None where the model does not distinguish it from use
    buffer_needed_bytes: float | None = None

    def to_json(self) -> dict:
        """The documented JSON shape of `einsim simulate --json`."""
        return to_jsonable(self)
