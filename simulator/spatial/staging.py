"""FLAT's dataflow on a spatial target: which tensors are staged in the global buffer and which
stream past it, the loop nest each contraction runs under its stationarity, and the DRAM and
buffer accesses, buffer need and overbooking that follow (docs/simulator.md §5.6).

The FLAT paper (Kao et al., ASPLOS 2023) fuses QK, the softmax and AV over a block of query rows
(its row granularity; the whole query length is its head granularity) and chooses per tensor
whether the buffer stages it; its author summarises FLAT-tile as row tiling with an
output-stationary inner dataflow. The FuseMax artifact (`src/accel/flat.py`, `cascade.py`) runs
FLAT that way with Timeloop: a tensor that bypasses the buffer is fetched from DRAM for every loop
trip down to the innermost loop that indexes it, and an overbooked buffer sends a fraction of
every access to a staged tensor to DRAM. The counts here are that reuse analysis written out in
closed form; they reproduce the artifact's FLAT traffic (docs/validation.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from einsim.errors import ConfigError
from einsim.simulator.mapping import STATIONARITIES


@dataclass(frozen=True)
class Contraction:
    """A product summed over one rank, run on the 2D array: output[k, q] = sum_r X[r, q] * W[r, k].

    `query_operand` (X) holds the query rank q (Q of QK, A of AV), `key_operand` (W) does not
    (K, V); `key_rank` k is the output's other rank (M of QK, F of AV), `reduced` r the summed
    one (E of QK, M of AV). Extents are per head; the query extent is the block's.
    """

    output: str
    query_operand: str
    key_operand: str
    key_rank: str
    reduced: str
    key_extent: int
    reduced_extent: int

    def tensor_ranks(self, tensor: str) -> frozenset[str]:
        """Which of the nest's ranks ("k", "q", "r") the tensor is indexed by."""
        if tensor == self.output:
            return frozenset({"k", "q"})
        if tensor == self.query_operand:
            return frozenset({"r", "q"})
        if tensor == self.key_operand:
            return frozenset({"r", "k"})
        raise ConfigError(f"{tensor} is not an operand of {self.output}")


def loop_nest(contraction: Contraction, stationarity: str, block, query_len: float, rows: int, cols: int):
    """The contraction's loops under `stationarity` (docs/simulator.md §5.6), outer to inner, as
    (rank, trips) with the query blocks outermost, and the ranks spread over the array with their
    extents. The stationary tensor's ranks are spread over the PEs; the innermost loop runs the
    rank it does not have, so it stays in the PE registers across it:

    output: rows k, columns q, innermost r;  weight: rows k, columns r, innermost q;
    input: rows r, columns q, innermost k.  A spread rank covers min(extent, PEs) PEs and loops
    ceil(extent / PEs) times; the innermost rank loops over its whole extent.
    """
    if stationarity not in STATIONARITIES:
        raise ConfigError(f"stationarity: expected one of {', '.join(STATIONARITIES)}, got {stationarity!r}")
    block = np.asarray(block, dtype=float)
    extent = {"k": float(contraction.key_extent), "r": float(contraction.reduced_extent), "q": block}
    on_rows, on_cols, inner = {"output": ("k", "q", "r"), "weight": ("k", "r", "q"), "input": ("r", "q", "k")}[stationarity]
    spread = {on_rows: np.minimum(extent[on_rows], rows), on_cols: np.minimum(extent[on_cols], cols)}
    trips = [
        ("blocks", np.ceil(query_len / block)),
        (on_cols, np.ceil(extent[on_cols] / cols)),
        (on_rows, np.ceil(extent[on_rows] / rows)),
        (inner, extent[inner] * np.ones_like(block)),
    ]
    return trips, spread


def fetches(trips, spread, ranks: frozenset[str]):
    """Elements of a tensor indexed by `ranks` brought to the PEs (per head): one tile (its share
    of the spread ranks) per trip of every loop down to the innermost loop that indexes it with
    more than one trip; the loops inside that reuse the tile (Timeloop's reuse analysis, as the
    artifact runs it). The query-block loop indexes every tensor with the query rank."""
    count = running = np.asarray(1.0)
    for rank, trip in trips:
        running = running * trip
        if ("q" in ranks) if rank == "blocks" else (rank in ranks):
            count = np.where(trip > 1, running, count)
    tile = 1.0
    for rank, extent in spread.items():
        if rank in ranks:
            tile = tile * extent
    return count * tile


@dataclass(frozen=True, eq=False)
class StagingPlan:
    """What the mapping stages (`buffer`) or streams (`stream`), tensor by tensor, and each
    contraction's stationarity. Compared by identity: a design builds each plan once."""

    staging: Mapping[str, str]
    stationarity: Mapping[str, str]

    def staged(self, tensor: str) -> bool:
        return self.staging.get(tensor) == "buffer"


def group_plans(design, group, staging, stationarity: Mapping[str, str]) -> tuple[StagingPlan, ...]:
    """The staging plans a FLAT group is evaluated under (§5.6): FLAT's policy ("flat") tries
    both of its modes and keeps the faster; "fused", "rows" or a tensor -> buffer | stream
    mapping (over the fused plan) gives one. `stationarity` overrides each plan's."""
    tensors = design.tensors
    planes = tuple(plane_accesses(design, group)[0])
    inputs = tuple(t for t in group.inputs if tensors[t].role != "plane")
    outputs = tuple(t for t in group.outputs if tensors[t].role != "plane")
    cons = contractions(design, group)
    # fused (FLAT-tile): the block's plane rows staged, inputs and output streamed, output stationary
    fused = ({t: "stream" for t in inputs + outputs} | {t: "buffer" for t in planes}, {c.output: "output" for c in cons})
    # rows: planes stream through DRAM; the block's queries and output staged, weight stationary
    rows = ({t: "stream" for t in inputs + planes}
            | {t: "buffer" for t in inputs + outputs if tensors[t].role == "query"}, {c.output: "weight" for c in cons})
    if staging == "flat":
        chosen = [fused, rows]
    elif staging == "fused":
        chosen = [fused]
    elif staging == "rows":
        chosen = [rows]
    else:
        chosen = [(fused[0] | dict(staging), fused[1])]
    return tuple(StagingPlan(where, {**how, **{k: v for k, v in stationarity.items() if k in how}}) for where, how in chosen)


def overbooked_fraction(need, capacity):
    """The share of every staged tensor that lives in DRAM when the buffer is overbooked: the
    buffer keeps capacity / need of each, so 1 - capacity / need of their accesses go off chip."""
    need = np.asarray(need, dtype=float)
    return np.where(need > capacity, 1.0 - capacity / np.where(need > 0, need, 1.0), 0.0)


# --- one fusion group under a staging plan ---------------------------------------------------

HEAD_RANKS = ("B", "H", "G")


def contractions(design, group) -> tuple[Contraction, ...]:
    """The group's contractions on the 2D array as FLAT's loop nest sees them (QK, AV)."""
    cascade, sizes, query = design.cascade, design.sizes, design.query_family
    found = []
    for name in group.einsums:
        node = design.node_by_name[name]
        einsum = cascade.einsum(name)
        if node.unit != "pe_2d" or einsum.reduce_op != "sum" or "mul" not in einsum.map_ops or len(node.operands) != 2:
            continue
        with_query = [t for t in node.operands if set(cascade.tensors[t]) & query]
        without = [t for t in node.operands if not set(cascade.tensors[t]) & query]
        if len(with_query) != 1 or len(without) != 1:
            continue
        key_ranks = [r for r in einsum.output_ranks if r not in query and r not in HEAD_RANKS]
        found.append(Contraction(
            output=name, query_operand=with_query[0], key_operand=without[0], key_rank="".join(key_ranks),
            reduced="".join(einsum.reduced_ranks),
            key_extent=math.prod(sizes[r] for r in key_ranks), reduced_extent=math.prod(sizes[r] for r in einsum.reduced_ranks),
        ))
    return tuple(found)


def plane_accesses(design, group) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """Per plane tensor of the group, its accesses through the buffer when staged: ("write",
    producer) once if anything reads it through the buffer, ("read", consumer) for every consumer
    that is not its producer's own array in the producer's pass (that one takes it straight from
    the PE: SD summing SN as SN is made). Also which array produces each plane."""
    nodes = design.node_by_name
    members = set(group.einsums)
    accesses: dict[str, list[tuple[str, str]]] = {}
    for tensor, info in design.tensors.items():
        if info.role != "plane" or tensor not in members:
            continue
        producer = nodes[tensor]
        reads = [("read", n) for n in group.einsums
                 if tensor in nodes[n].operands and not (nodes[n].unit == producer.unit and nodes[n].pass_index == producer.pass_index)]
        accesses[tensor] = ([("write", tensor)] if reads else []) + reads
    return accesses, {t: nodes[t].unit for t in accesses}


def _operand_traffic(design, group, plan: StagingPlan, block, planes) -> tuple[dict, dict, dict, list]:
    """Per Einsum: DRAM accesses, buffer accesses of staged tensors (before overbooking) and the
    DRAM <-> buffer transfers of staged inputs/outputs, for the contractions' operands and
    outputs (planes apart) and the inputs no contraction reads; and the contractions."""
    zeros = np.zeros(block.shape)
    tensors, nodes = design.tensors, design.node_by_name
    heads, query_len = float(design.heads_total), float(design.query_len)
    dram = {n: zeros.copy() for n in group.einsums}
    buffer_reads = {n: zeros.copy() for n in group.einsums}
    staged_loads = {n: zeros.copy() for n in group.einsums}
    cons = contractions(design, group)
    for c in cons:
        trips, spread = loop_nest(c, plan.stationarity.get(c.output, "output"), block, query_len, design.rows, design.cols)
        for tensor in (c.query_operand, c.key_operand, c.output):
            if tensor in planes:
                continue  # counted with the planes
            count = heads * design.tile_density * fetches(trips, spread, c.tensor_ranks(tensor))
            if tensors[tensor].role == "plane":  # a plane from DRAM (a group input): streamed
                dram[c.output] += count
                continue
            per_head = tensors[tensor].elements / heads
            size = per_head * heads * (tensors[tensor].kv_scale if tensors[tensor].role == "key" else 1.0)
            partial_reads = np.maximum(count - heads * per_head, 0.0) if tensor == c.output else zeros
            if plan.staged(tensor):
                staged_loads[c.output] += size
                buffer_reads[c.output] += count + partial_reads
            else:
                dram[c.output] += count + partial_reads
    # inputs no contraction reads (none in the library's cascades) come in once
    read_by_contraction = {t for c in cons for t in (c.query_operand, c.key_operand)}
    for tensor in group.inputs:
        if tensors[tensor].role != "plane" and tensor not in read_by_contraction:
            reader = next(n for n in group.einsums if tensor in nodes[n].operands)
            dram[reader] += tensors[tensor].elements * tensors[tensor].kv_scale
    return dram, buffer_reads, staged_loads, cons


def _plane_traffic(design, group, plan: StagingPlan, accesses, producer_unit, dram, buffer_reads, zeros) -> dict:
    """Plane tensors: staged, every access is a buffer access; streamed, a plane crosses between
    the arrays through DRAM (written once, read once per other array that reads it) and what one
    array reuses within a row goes through a row buffer (the softmax works row by row). Adds to
    `dram` and `buffer_reads`; returns the row buffer's accesses per Einsum."""
    tensors, nodes = design.tensors, design.node_by_name
    row_buffer = {n: zeros.copy() for n in group.einsums}
    for tensor, touches in accesses.items():
        elements = tensors[tensor].elements * design.tile_density
        if plan.staged(tensor):
            for _, einsum in touches:
                buffer_reads[einsum] += elements
            continue
        home = producer_unit[tensor]
        loaded: set[str] = set()
        for kind, einsum in touches:
            unit = nodes[einsum].unit
            if kind == "write":
                leaves = any(nodes[e].unit != home for k, e in touches if k == "read")
                (dram if leaves else row_buffer)[einsum] += elements
            elif unit != home and unit not in loaded:
                dram[einsum] += elements
                loaded.add(unit)
            else:
                row_buffer[einsum] += elements
    return row_buffer


def _tiles_and_staged_inputs(design, group, plan: StagingPlan, block, cons, buffering: int):
    """The first contraction's output tile and operand tiles (operands times `buffering`), and
    the staged inputs' elements (before `buffering`)."""
    tiles = 0.0
    if cons:
        tiles = design.rows * design.cols + buffering * (design.rows + design.cols) * cons[0].reduced_extent
    staged_inputs = np.zeros(block.shape)
    for tensor in group.inputs:
        info = design.tensors[tensor]
        if plan.staged(tensor) and info.role == "query":
            staged_inputs = staged_inputs + info.per_query * np.minimum(block, float(design.query_len))
        elif plan.staged(tensor) and info.role == "key":
            staged_inputs = staged_inputs + info.per_key * float(design.key_len)
    return tiles, staged_inputs


def evaluate_staged(design, group, plan: StagingPlan, block, capacity, buffering: int):
    """DRAM and buffer accesses (elements, whole workload), buffer need and overbooking of one
    FLAT group at each query block (docs/simulator.md §5.6). Returns arrays over `block`."""
    block = np.asarray(block, dtype=float)
    zeros = np.zeros(block.shape)
    accesses, producer_unit = plane_accesses(design, group)
    dram, buffer_reads, staged_loads, cons = _operand_traffic(design, group, plan, block, accesses)
    row_buffer = _plane_traffic(design, group, plan, accesses, producer_unit, dram, buffer_reads, zeros)

    # buffer need (§5.6): the block's plane rows (one plane: SN and A overwrite QK in place), the
    # first contraction's output tile and operand tiles, and the staged inputs, the last two
    # times `buffering` (2: the next tile loads while this one is used)
    fused = any(plan.staged(t) for t in accesses)
    live = block * float(design.key_len) * design.live_fraction if fused else zeros
    tiles, staged_inputs = _tiles_and_staged_inputs(design, group, plan, block, cons, buffering)
    word = design.word
    need = word * (live + tiles + buffering * staged_inputs)
    overbooked = overbooked_fraction(need, capacity)
    # the softmax of streamed planes works a row at a time beside the staged tensors
    row_need = word * (float(design.key_len) + tiles + buffering * staged_inputs)
    row_spill = zeros if fused or not any(np.any(v) for v in row_buffer.values()) else overbooked_fraction(row_need, capacity)
    einsum_dram = {}
    einsum_buffer = {}
    for name in group.einsums:
        spilled = buffer_reads[name] * overbooked + row_buffer[name] * row_spill
        einsum_dram[name] = word * (dram[name] + staged_loads[name] * (1.0 - overbooked) + spilled)
        einsum_buffer[name] = word * (buffer_reads[name] * (1.0 - overbooked) + row_buffer[name] * (1.0 - row_spill)
                                      + staged_loads[name] * (1.0 - overbooked))
    return {
        "einsum_dram": einsum_dram, "einsum_buffer": einsum_buffer,
        "need": need, "live": word * live, "overbooked": np.maximum(overbooked, row_spill),
        "feasible": word * (tiles + buffering * staged_inputs) <= capacity,
    }
