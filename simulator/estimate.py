"""What a simulation returns: the whole-cascade estimate and one row per Einsum.

Every number here is derived by a formula written down in docs/simulator.md; `notes` carries the
human-readable reasons (what spilled, which unit bounds the latency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    """A cascade on a target for a problem and mapping. `print(estimate)` shows the report
    einsim simulate prints; `to_dict()` is its JSON; `row()` one flat row; `records()` one
    DataFrame-ready row per Einsum (`pandas.DataFrame(estimate.records())`)."""

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
    # What simulate() records about the cascade, for the report's words: attention (it has the
    # K/V rank M and the query rank P), whether state live between passes over M grows with M
    # (None: not analysed, as for a single pass), and every rank's size as simulated.
    attention: bool = True
    live_state_grows: bool | None = None
    rank_sizes: dict[str, int] = field(default_factory=dict)
    # (query, key) pairs the problem's mask and the cascade's own filters keep, every batch
    # element and head (the roofline credits these); None: the problem's mask alone decides
    visible_pairs: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape of `einsim simulate --json` (docs/simulator.md)."""
        return to_jsonable({f: getattr(self, f) for f in self.__dataclass_fields__})

    def row(self, **keys: Any) -> dict[str, Any]:
        """The whole estimate as one flat row (`keys` first; utilisation as util_<unit>): the
        columns of `einsim sweep --out`."""
        p = self.problem
        row = dict(keys)
        row.update(
            cascade=self.cascade, target=self.target, workload=p.name, batch=p.batch, heads=p.q_heads,
            kv_heads=p.kv_heads, q_len=p.q_len, kv_len=p.kv_len, head_dim=p.head_dim, passes=self.passes,
            latency_s=self.latency_s, traffic_bytes=self.traffic_bytes, energy_j=self.energy_j,
            buffer_bytes=self.buffer_bytes, buffer_needed_bytes=self.buffer_needed_bytes,
            buffer_capacity_bytes=self.buffer_capacity_bytes, fits=self.fits, bound=self.bound)
        row.update({f"util_{unit}": value for unit, value in self.utilization.items()})
        return row

    def records(self) -> list[dict[str, Any]]:
        """One flat row per Einsum (its unit, pass, traffic, buffer, time, energy and operations
        as op_<kind>), each carrying the cascade, target and problem, ready for a DataFrame."""
        p = self.problem
        rows = []
        for e in self.per_einsum:
            row = {"cascade": self.cascade, "target": self.target, "problem": p.label, "einsum": e.einsum,
                   "pass": e.pass_index, "unit": e.unit, "traffic_bytes": e.traffic_bytes,
                   "buffer_bytes": e.buffer_bytes, "latency_s": e.latency_s, "energy_j": e.energy_j}
            row.update({f"op_{kind}": count for kind, count in e.compute_ops.items()})
            rows.append(row)
        return rows

    def __str__(self) -> str:
        from einsim.simulator.report import format_estimate

        return format_estimate(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython/Jupyter show the report, not the dataclass repr."""
        printer.text(f"Estimate({self.cascade} on {self.target})" if cycle else str(self))
