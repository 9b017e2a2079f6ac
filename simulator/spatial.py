"""The analytical model of a cascade on a spatial accelerator (a 2D PE array, a 1D PE array, a
global buffer, DRAM): per-array work, buffer need and spills, traffic, latency, energy.

Every formula carries the section of docs/simulator.md that explains it and gives its source.
`Design` compiles everything that does not depend on the searched mapping parameters once;
`Design.evaluate` is vectorised over query blocks (and buffer capacities), so the default mapping
search, `--buffer-sweep` and sweeps of many mapping points are a few numpy operations each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from einsim.einsum_cascades.ir import Cascade
from einsim.einsum_cascades.passes import PassReport, analyze_passes, dependency_graph
from einsim.errors import ConfigError
from einsim.simulator.estimate import EinsumEstimate, Estimate
from einsim.simulator.mapping import Mapping, ResolvedMapping, array_shape, key_leaf, resolve_mapping, vector_length
from einsim.problem import Problem
from einsim.targets.units import format_bytes

OP_KINDS = ("mul", "add", "sub", "div", "exp", "max", "min")
# epochs simulated to reach the steady state of the sequential (in-order) schedule (§4.3)
_SCHEDULE_EPOCHS = 6


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
    role: str  # "query" (per-query state), "key" (K, V), "plane" (M x P), "other"
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


class Design:
    """A cascade, a workload, a target and a resolved mapping, compiled for fast evaluation."""

    def __init__(self, cascade: Cascade, problem: Problem, target, mapping: ResolvedMapping,
                 report: PassReport | None = None, query_rank: str = "P", sizes: dict[str, int] | None = None):
        """`query_rank` is the rank whose rows stay on chip for a block (attention's P, a GEMM's
        token rank); the key rank, streamed through, is the pass analysis's (attention's M).
        `sizes` binds ranks the workload does not name (a GEMM's K, M, N)."""
        self.cascade, self.problem, self.target, self.mapping = cascade, problem, target, mapping
        self.report = report or analyze_passes(cascade)
        self.query_rank = query_rank
        # a cascade may split the query rank too (the library's `flat`: P into P1 x P0)
        self.query_family = cascade.space.family(query_rank) if query_rank in cascade.ranks else {query_rank}
        self.rows, self.cols = array_shape(target)
        self.vector_pes = vector_length(target)
        self.clock = target.clock_hz
        self.word = problem.dtype_bytes
        self.buffer_level, self.register_levels = _on_chip_levels(target, self.rows * self.cols, self.vector_pes)
        self.dram = target.offchip
        self.key_rank = self.report.rank
        self.key_family = set(self.report.family) or {self.key_rank}
        self.key_inner = key_leaf(cascade, self.key_rank)

        given = dict(problem.rank_sizes())
        given.update({"batch": problem.batch, "heads": problem.q_heads, "head_dim": problem.head_dim,
                      "v_head_dim": problem.v_head_dim})
        given.update(sizes or {})
        if self.key_inner is not None:
            given[self.key_inner] = mapping.key_tile
        self.sizes = cascade.bind(given)
        # ranks the cascade does not have (batch, heads) multiply every count (§3.1)
        self.head_factor = 1
        if "B" not in cascade.ranks:
            self.head_factor *= problem.batch
        if "H" not in cascade.ranks and "G" not in cascade.ranks:
            self.head_factor *= problem.q_heads
        self.heads_total = problem.batch * problem.q_heads  # query heads, all batches
        self.key_len = self.sizes.get(self.key_rank, problem.kv_len)
        self.query_len = problem.q_len * problem.group_size  # queries sharing one K/V head
        self.key_tile_rows = mapping.key_tile if mapping.key_tile is not None else self.rows

        self.masked = problem.causal or problem.window is not None
        # §3.1 a causal or windowed workload skips the (key tile x query tile) tiles it cannot see
        self.tile_density = visible_tile_fraction(problem, self.key_tile_rows, min(mapping.query_tile, problem.q_len)) if self.masked else 1.0
        self.tensors = self._tensors()
        self.nodes = self._nodes()
        self.node_by_name = {n.name: n for n in self.nodes}
        self.groups = self._groups()

    # --- compile ---------------------------------------------------------------------------
    def _tensors(self) -> dict[str, TensorInfo]:
        cascade, sizes = self.cascade, self.sizes
        iterative = cascade.iterative_tensors
        out = {}
        for name, ranks in cascade.tensors.items():
            elements = float(cascade.tensor_elements(name, sizes)) * self.head_factor
            is_iterative = name in iterative and iterative[name] in self.key_family
            if is_iterative:
                elements /= sizes[iterative[name]] + 1  # only the current state is ever live
            has_query = bool(set(ranks) & self.query_family)
            has_key = bool(set(ranks) & self.key_family) and not is_iterative
            role = "plane" if has_query and has_key else "query" if has_query else "key" if has_key else "other"
            heads = float(self.heads_total)
            if any(r in ("H", "G") for r in ranks) and not any(r == "H" for r in ranks):
                heads = self.problem.batch * self.problem.kv_heads
            per_query = elements / (heads * self.problem.q_len) if has_query else 0.0
            per_key = elements / (heads * self.key_len) if role == "key" else 0.0
            kv_scale = problem_kv_share(self.problem) if role == "key" and "H" in ranks else 1.0
            out[name] = TensorInfo(name, role, elements, per_query, per_key, kv_scale)
        return out

    def _nodes(self) -> tuple[Node, ...]:
        cascade, target, mapping = self.cascade, self.target, self.mapping
        graph = dependency_graph(cascade)
        group_of = {name: i for i, group in enumerate(mapping.groups) for name in group}
        exp_unit = target.unit("exp")
        exp_native = exp_unit.via is None
        dtype = target.default_dtype
        nodes = []
        for einsum in cascade.einsums:
            name = einsum.output
            unit = mapping.binding[name]
            points = float(einsum.iteration_points(self.sizes)) * self.head_factor
            counts = einsum.operation_counts(self.sizes)
            ops = {k: float(v) * self.head_factor for k, v in counts.items()}
            per_point = {k: (ops.get(k, 0.0) / points if points else 0.0) for k in OP_KINDS}
            ranks = set(einsum.iteration_ranks)
            if self.masked and ranks & self.key_family and ranks & self.query_family:
                # the hardware computes whole visible tiles: the mask's tile density, not the
                # cascade's own filters (if any), sets the work
                points = float(math.prod(self.sizes[r] for r in einsum.iteration_ranks)) * self.head_factor * self.tile_density
                ops = {k: v * points for k, v in per_point.items() if v}
            if per_point["div"] and unit == "pe_2d":
                raise ConfigError(f"{name} divides but is bound to pe_2d: the 2D array's PEs have no divider; bind it to pe_1d")
            if per_point["exp"] and exp_native and unit == "pe_2d":
                raise ConfigError(f"{name} needs exp, which {target.name} computes on its 1D array's exp units; bind it to pe_1d")
            cpp = cycles_per_point(per_point, exp_unit, self.vector_pes)
            if self.key_inner is not None and self.key_inner in ranks:
                key_extent = self.key_tile_rows
            elif self.key_rank in ranks:
                key_extent = self.key_len
            else:
                key_extent = 0
            row_extent = key_extent or 1
            drains = unit == "pe_2d" and bool(set(einsum.reduced_ranks) & ({self.key_inner} if self.key_inner else {self.key_rank}))
            deps = tuple(
                (producer, bool(graph.edges[producer, name]["carried"]))
                for producer in graph.predecessors(name)
                if group_of[producer] == group_of[name]
            )
            nodes.append(Node(
                name=name, group=group_of[name], unit=unit, pass_index=self.report.einsum_pass[name],
                points=points, ops=ops, cycles_per_point=cpp, row_extent=row_extent,
                iterates_query=bool(ranks & self.query_family), key_extent=key_extent, drains_rows=drains, deps=deps,
                operands=einsum.operand_tensors,
                energy_per_point=compute_energy_per_point(per_point, unit, target, dtype, exp_native),
                register_energy_per_cycle=self._register_energy(unit),
            ))
        return tuple(nodes)

    def _register_energy(self, unit: str) -> float:
        level = self.register_levels.get(unit)
        if level is None:
            return 0.0
        # two operand reads and one result write per PE-cycle (§6)
        return self.word * (2 * level.read_energy_j_per_byte + level.write_energy_j_per_byte)

    def _groups(self) -> tuple[Group, ...]:
        cascade = self.cascade
        producer = {e.output: e for e in cascade.einsums}
        consumers: dict[str, list[str]] = {}
        for einsum in cascade.einsums:
            for tensor in einsum.operand_tensors:
                consumers.setdefault(tensor, []).append(einsum.output)
        groups = []
        for index, names in enumerate(self.mapping.groups):
            members = set(names)
            inputs, outputs, resident = [], [], []
            for name in names:
                for tensor in producer[name].operand_tensors:
                    if tensor not in members and tensor not in inputs:
                        inputs.append(tensor)
                    if self.tensors[tensor].role == "query" and tensor not in resident:
                        resident.append(tensor)
                if any(c not in members for c in consumers.get(name, ())) or name in cascade.outputs:
                    outputs.append(name)
                if self.tensors[name].role == "query" and name not in resident:
                    resident.append(name)
            live = self._live(names, producer, consumers)
            units = {self.node_by_name[n].unit for n in names}
            groups.append(Group(index, tuple(names), tuple(inputs), tuple(outputs), tuple(resident), live, "pe_2d" in units))
        return tuple(groups)

    def _live(self, names, producer, consumers) -> tuple[tuple[str, int, tuple[int, ...], bool], ...]:
        """§5.1 plane tensors that one pass of this group writes (or first reads from DRAM) and a
        later pass reads again: they stay on chip for a query block, or spill."""
        members = set(names)
        passes = self.report.einsum_pass
        found = []
        for tensor, info in self.tensors.items():
            if info.role != "plane":
                continue
            readers = [c for c in consumers.get(tensor, ()) if c in members]
            if not readers:
                continue
            produced_here = tensor in members
            read_in = sorted({passes[c] for c in readers})
            start = passes[tensor] if produced_here else read_in[0]
            later = tuple(p for p in read_in if p > start)
            if later:
                found.append((tensor, start, later, produced_here))
        return tuple(found)

    # --- evaluate --------------------------------------------------------------------------
    def evaluate(self, query_block, spill: str = "store", capacity=None, query_tile=None, dram_bandwidth=None) -> dict[str, Any]:
        """Every group at the same query block, spill policy, buffer capacity, query tile and DRAM
        bandwidth (broadcastable arrays): mapping or design points of a sweep. The default
        mapping instead chooses per group (`choose`)."""
        return self._total([self.evaluate_group(g, query_block, spill, capacity, query_tile, dram_bandwidth) for g in self.groups])

    def evaluate_group(self, group: Group, query_block, spill: str = "store", capacity=None, query_tile=None,
                       dram_bandwidth=None) -> dict[str, Any]:
        """One fusion group at each query block (and buffer capacity, query tile, bandwidth)."""
        word, tensors = self.word, self.tensors
        cap = self.buffer_level.capacity_bytes if capacity is None else capacity
        tile = self.mapping.query_tile if query_tile is None else query_tile
        bandwidth = self.dram.bandwidth("measured") if dram_bandwidth is None else dram_bandwidth
        query_block, cap, tile, bandwidth = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (query_block, cap, tile, bandwidth)))
        query_block = np.minimum(query_block, self.query_len)
        zeros = np.zeros(query_block.shape)
        query_tile = np.minimum(tile, query_block)
        nodes = [self.node_by_name[n] for n in group.einsums]
        key_tiles = math.ceil(self.key_len / self.key_tile_rows)
        query_tiles = np.ceil(self.query_len / query_tile)

        # §5.1 buffer need for one query block: per-query state, streamed key tiles, live rows
        resident = sum((tensors[t].per_query for t in group.resident_query), 0.0)
        key_inputs = [t for t in group.inputs if tensors[t].role == "key"]
        plane_tiles = 2.0 * self.rows * self.cols * sum(1 for t in group.inputs if tensors[t].role == "plane")
        # a key tile (M0 x E) is double-buffered whole and reused by every query tile of the
        # block; if even that does not fit, it streams in array-width chunks and is re-read per
        # query tile instead (a GEMM with a long reduction on a small buffer)
        whole = 2.0 * self.key_tile_rows * sum(tensors[t].per_key for t in key_inputs)
        chunked = 2.0 * self.key_tile_rows * sum(min(tensors[t].per_key, self.cols) for t in key_inputs)
        base = word * (resident * query_block + plane_tiles)
        tile_reuse = base + word * whole <= cap
        fixed = base + word * np.where(tile_reuse, whole, chunked)
        live = word * _live_per_row(group, tensors) * query_block
        need = fixed + live
        feasible = fixed <= cap
        spill_fraction = np.clip((need - cap) / np.where(live > 0, live, 1.0), 0.0, 1.0)
        spill_fraction = np.where(live > 0, np.where(feasible, spill_fraction, 1.0), 0.0)
        key_full = word * self.key_len * sum(tensors[t].per_key for t in key_inputs)
        key_resident = (need + key_full <= cap) & (spill_fraction == 0)
        streamed_per = np.where(tile_reuse, query_block, query_tile)
        rereads = np.ceil(self.query_len / streamed_per)
        if self.masked:  # a query block reads only the key tiles its rows can see
            rereads = rereads * self._block_density(np.maximum(1.0, streamed_per / self.problem.group_size))
        rereads = np.where(key_resident, 1.0, rereads)

        # §5.2 DRAM traffic: inputs (key tensors once per query block), outputs, spills
        einsum_dram = {n.name: zeros.copy() for n in nodes}
        first_reader = {}
        for node in nodes:
            for t in node.operands:
                first_reader.setdefault(t, node.name)
        dram = zeros.copy()
        for t in group.inputs:
            info = tensors[t]
            moved = word * info.elements * info.kv_scale * (rereads if info.role == "key" else 1.0)
            dram = dram + moved
            einsum_dram[first_reader[t]] += moved
        for t in group.outputs:
            moved = word * tensors[t].elements
            dram = dram + moved
            einsum_dram[t] += moved
        extra_cycles = {n.name: zeros.copy() for n in nodes}
        for tensor, _, later, produced_here in group.live:
            readers = self._readers(group, tensor)
            if spill == "store" or not produced_here:
                # written once (unless it came from DRAM anyway), read back by every later pass
                spilled = word * tensors[tensor].elements * spill_fraction
                dram = dram + spilled * (len(later) + (1 if produced_here else 0))
                if produced_here:
                    einsum_dram[tensor] += spilled
                for reader in readers:
                    einsum_dram[reader] += spilled * len(later) / len(readers)
            else:  # §5.3 recompute its producer chain in every later pass that reads it
                chain, chain_keys = self._chain(group, tensor)
                for name in chain:
                    extra_cycles[name] = extra_cycles[name] + spill_fraction * len(later) * self._cycles(self.node_by_name[name], query_tile)
                for t in chain_keys:
                    moved = word * tensors[t].elements * tensors[t].kv_scale * rereads * spill_fraction * len(later)
                    dram = dram + moved
                    einsum_dram[first_reader.get(t, tensor)] += moved

        # §5.4 global-buffer traffic: fills and drains of DRAM data, operand tiles into the
        # arrays, per-query state read and written once per key tile, live rows kept on chip
        # every DRAM byte passes through the buffer once (written on fill, read on drain)
        einsum_buffer = {n.name: 2.0 * einsum_dram[n.name] for n in nodes}
        buffer_bytes = 2.0 * dram
        for node in nodes:
            moved = 0.0
            for t in node.operands:
                info = tensors[t]
                if info.role == "key":
                    moved = moved + word * info.elements * info.kv_scale * query_tiles
                elif info.role == "query":
                    moved = moved + word * info.elements * (key_tiles if node.key_extent else 1)
            if tensors[node.name].role == "query":
                moved = moved + word * tensors[node.name].elements * (key_tiles if node.key_extent else 1)
            einsum_buffer[node.name] += moved
            buffer_bytes = buffer_bytes + moved
        for tensor, _, later, produced_here in group.live:
            readers = self._readers(group, tensor)
            kept = word * tensors[tensor].elements * (1.0 - spill_fraction) * ((1 if produced_here else 0) + len(readers))
            buffer_bytes = buffer_bytes + kept
            einsum_buffer[tensor if produced_here else readers[0]] += kept

        # §4 compute: cycles per unit (busy, and useful work without idle PEs), then the schedule
        cycles = {n.name: self._cycles(n, query_tile) + extra_cycles[n.name] for n in nodes}
        work = {n.name: (n.points * n.cycles_per_point / self._pes(n.unit)) * (cycles[n.name] / self._cycles(n, query_tile))
                for n in nodes}
        busy = {u: sum((cycles[n.name] for n in nodes if n.unit == u), zeros.copy()) for u in ("pe_2d", "pe_1d")}
        useful = {u: sum((work[n.name] for n in nodes if n.unit == u), zeros.copy()) for u in ("pe_2d", "pe_1d")}
        epochs = float(self.heads_total) * query_tiles * (key_tiles if self.key_inner else 1)
        if self.mapping.schedule == "sequential":
            compute_cycles = self._sequential_cycles(nodes, cycles, epochs)
        else:
            fill = (self.rows + self.cols) if group.uses_2d else self.vector_pes
            compute_cycles = np.maximum(busy["pe_2d"], busy["pe_1d"]) + fill
        times = {"schedule": compute_cycles / self.clock, "pe_2d": busy["pe_2d"] / self.clock,
                 "pe_1d": busy["pe_1d"] / self.clock, "dram": dram / bandwidth,
                 "global_buffer": buffer_bytes / self.buffer_level.bandwidth("measured")}
        latency = np.maximum(np.maximum(times["schedule"], times["dram"]), times["global_buffer"])
        latency = np.where(feasible, latency, np.inf)

        # §6 energy
        energy: dict[str, Any] = {}
        einsum_energy = {}
        for node in nodes:
            repeat = cycles[node.name] / self._cycles(node, query_tile)  # > 1 when recomputed
            joules = node.energy_per_point * node.points * repeat
            energy[node.unit] = energy.get(node.unit, zeros) + joules
            level = self.register_levels.get(node.unit)
            if level is not None:
                registers = node.register_energy_per_cycle * node.points * node.cycles_per_point * repeat
                energy[level.name] = energy.get(level.name, zeros) + registers
                joules = joules + registers
            einsum_energy[node.name] = joules
        buffer_j = 0.5 * (self.buffer_level.read_energy_j_per_byte + self.buffer_level.write_energy_j_per_byte)
        dram_j = 0.5 * (self.dram.read_energy_j_per_byte + self.dram.write_energy_j_per_byte)
        energy[self.buffer_level.name] = buffer_bytes * buffer_j
        energy[self.dram.name] = dram * dram_j
        for node in nodes:
            einsum_energy[node.name] = einsum_energy[node.name] + einsum_buffer[node.name] * buffer_j + einsum_dram[node.name] * dram_j
        return {
            "latency_s": latency, "traffic_bytes": dram, "buffer_traffic_bytes": buffer_bytes,
            "buffer_bytes": need, "fits": need <= cap, "feasible": feasible, "spill_fraction": spill_fraction,
            "energy_j": sum(energy.values(), zeros.copy()), "energy_by_component": energy, "times": times,
            "busy_s": {u: v / self.clock for u, v in busy.items()}, "work_s": {u: v / self.clock for u, v in useful.items()},
            "einsum_cycles": cycles, "einsum_dram": einsum_dram, "einsum_buffer": einsum_buffer,
            "einsum_energy": einsum_energy,
        }

    @staticmethod
    def _total(parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Groups run one after another: latencies, traffic and energy add; the buffer need is the
        largest group's."""
        total: dict[str, Any] = {}
        for part in parts:
            for key, value in part.items():
                if key not in total:
                    total[key] = {k: v.copy() for k, v in value.items()} if isinstance(value, dict) else np.array(value, copy=True)
                elif key in ("buffer_bytes", "spill_fraction"):
                    total[key] = np.maximum(total[key], value)
                elif key in ("fits", "feasible"):
                    total[key] = total[key] & value
                elif isinstance(value, dict):
                    for k, v in value.items():
                        total[key][k] = total[key][k] + v if k in total[key] else v
                else:
                    total[key] = total[key] + value
        return total

    def choose(self, capacity=None) -> list[dict[str, Any]]:
        """§2.3 per group, the query block and spill policy with the least latency, then the least
        DRAM traffic, then the least energy, then the largest block. With an array of capacities
        (--buffer-sweep) each entry of the returned lists holds arrays over the capacities."""
        blocks = np.array(self.mapping.query_blocks, dtype=float)
        caps = np.atleast_1d(np.asarray(self.buffer_level.capacity_bytes if capacity is None else capacity, dtype=float))
        choices = []
        for group in self.groups:
            best_key, best_block, best_spill = None, None, None
            for spill in self.mapping.spills:
                r = self.evaluate_group(group, blocks[None, :], spill, caps[:, None])
                index = _pick(r["latency_s"], r["traffic_bytes"], r["energy_j"], blocks)
                rows = np.arange(len(caps))
                key = np.stack([r["latency_s"][rows, index], r["traffic_bytes"][rows, index]])
                if best_key is None:
                    best_key, best_block, best_spill = key, blocks[index], np.full(len(caps), spill, dtype=object)
                else:
                    better = _lexless(key, best_key)
                    best_key = np.where(better, key, best_key)
                    best_block = np.where(better, blocks[index], best_block)
                    best_spill = np.where(better, spill, best_spill)
            choices.append({"query_block": best_block, "spill": best_spill})
        return choices

    def evaluate_choice(self, choices: list[dict[str, Any]], capacity=None) -> dict[str, Any]:
        """The model at per-group choices (from `choose`), over the same capacities."""
        parts = []
        for group, choice in zip(self.groups, choices):
            blocks = np.atleast_1d(choice["query_block"]).astype(float)
            spills = np.atleast_1d(choice["spill"])
            part = None
            for spill in dict.fromkeys(spills):
                r = self.evaluate_group(group, blocks, spill, capacity)
                if part is None:
                    part = r
                else:
                    part = _select(spills == spill, r, part)
            parts.append(part)
        return self._total(parts)

    def _block_density(self, blocks) -> np.ndarray:
        """Fraction of key tiles a query block sees, per block size (masked workloads)."""
        blocks = np.asarray(blocks, dtype=float)
        values = {b: visible_tile_fraction(self.problem, self.key_tile_rows, int(b)) for b in np.unique(blocks)}
        return np.vectorize(values.get, otypes=[float])(blocks)

    def _pes(self, unit: str) -> int:
        return self.rows * self.cols if unit == "pe_2d" else self.vector_pes

    def _cycles(self, node: Node, query_tile) -> np.ndarray:
        """§4.1 cycles of an Einsum on its unit: points x cycles per point over the busy PEs."""
        if node.unit == "pe_2d":
            occupancy = _fill(node.row_extent, self.rows) * (_fill(query_tile, self.cols) if node.iterates_query else 1.0 / self.cols)
        elif self.mapping.key_rank_1d and node.key_extent:
            occupancy = _fill(node.key_extent, self.vector_pes)
        elif node.iterates_query:
            occupancy = _fill(query_tile, self.vector_pes)
        elif node.key_extent:
            occupancy = _fill(node.key_extent, self.vector_pes)
        else:
            occupancy = 1.0 / self.vector_pes
        return node.points * node.cycles_per_point / (self._pes(node.unit) * occupancy)

    def _sequential_cycles(self, nodes, cycles, epochs) -> np.ndarray:
        """§4.3 no software pipelining: each unit runs its Einsums in program order, epoch after
        epoch; a reduction across the 2D array's rows drains for `rows` cycles before another unit
        can read it. Simulated for a few epochs to reach the steady-state period."""
        duration = {n.name: cycles[n.name] / epochs for n in nodes}
        free = {"pe_2d": 0.0, "pe_1d": 0.0}
        finish: list[dict[str, Any]] = []
        for k in range(_SCHEDULE_EPOCHS):
            done: dict[str, Any] = {}
            for node in nodes:
                start = free[node.unit]
                for producer, carried in node.deps:
                    source = finish[k - 1] if carried and k else ({} if carried else done)
                    if producer not in source:
                        continue
                    producer_node = self.node_by_name[producer]
                    lag = self.rows if producer_node.drains_rows and producer_node.unit != node.unit else 0
                    start = np.maximum(start, source[producer] + lag)
                done[node.name] = start + duration[node.name]
                free[node.unit] = done[node.name]
            finish.append(done)
        first = np.maximum.reduce([finish[0][n.name] for n in nodes])
        last = np.maximum.reduce([finish[-1][n.name] for n in nodes])
        before = np.maximum.reduce([finish[-2][n.name] for n in nodes])
        return first + (epochs - 1) * (last - before)

    def _readers(self, group: Group, tensor: str) -> list[str]:
        return [n for n in group.einsums if tensor in self.node_by_name[n].operands]

    def _chain(self, group: Group, tensor: str) -> tuple[list[str], list[str]]:
        """The Einsums to redo to recompute a plane tensor, and the key inputs they re-read."""
        chain, keys, todo = [], [], [tensor]
        while todo:
            name = todo.pop()
            if name in chain:
                continue
            chain.append(name)
            for t in self.node_by_name[name].operands:
                role = self.tensors[t].role
                if t in group.einsums and role == "plane":
                    todo.append(t)
                elif role == "key" and t not in keys:
                    keys.append(t)
        return chain, keys

    # --- the Estimate ----------------------------------------------------------------------
    def estimate(self, choices: list[dict[str, Any]]) -> Estimate:
        """The Estimate at per-group choices (docs/simulator.md §7 says what each field means)."""
        r = self.evaluate_choice(choices)
        one = lambda a: float(np.asarray(a).reshape(-1)[0])  # noqa: E731
        feasible = bool(np.asarray(r["feasible"]).reshape(-1)[0])
        latency = one(r["latency_s"]) if feasible else float("nan")
        per_einsum = tuple(
            EinsumEstimate(
                einsum=node.name,
                pass_index=node.pass_index,
                unit=node.unit,
                compute_ops={k: v for k, v in node.ops.items() if v},
                traffic_bytes=one(r["einsum_dram"][node.name]),
                buffer_bytes=self._einsum_buffer_bytes(node, choices),
                latency_s=one(r["einsum_cycles"][node.name]) / self.clock,
                energy_j=one(r["einsum_energy"][node.name]),
            )
            for node in self.nodes
        )
        dram_name, buffer_name = self.dram.name, self.buffer_level.name
        times = {k: one(v) for k, v in r["times"].items()}
        utilization = {}
        if math.isfinite(latency) and latency > 0:
            utilization = {"pe_2d": one(r["work_s"]["pe_2d"]) / latency, "pe_1d": one(r["work_s"]["pe_1d"]) / latency,
                           dram_name: times["dram"] / latency, buffer_name: times["global_buffer"] / latency}
        bound = self._bound(choices)
        compute_ops: dict[str, float] = {}
        for node in self.nodes:
            for kind, count in node.ops.items():
                compute_ops[kind] = compute_ops.get(kind, 0.0) + count
        capacity = self.buffer_level.capacity_bytes
        spill = one(r["spill_fraction"])
        notes = [f"mapping: {self._describe(choices)}"]
        if spill > 0:
            live = sorted({t for g in self.groups for t, _, _, _ in g.live})
            spills = {str(np.atleast_1d(c["spill"])[0]) for c in choices}
            how = "written to DRAM and read back in each later pass" if spills == {"store"} else "recomputed (K re-read) in each later pass"
            share = f"{spill:.0%}" if spill >= 0.01 else f"{spill:.2%}"
            notes.append(f"{share} of the rows live across passes ({', '.join(live)}) do not fit in {format_bytes(capacity)}: {how}")
        if not feasible:
            notes.append(f"even one query row's resident state does not fit in {format_bytes(capacity)}")
        if self.mapping.schedule == "sequential" and utilization:
            notes.append(f"sequential schedule: the 2D array does useful work {utilization['pe_2d']:.0%} of the time, the 1D array {utilization['pe_1d']:.0%}")
        notes.append(f"bound by {bound}")
        return Estimate(
            cascade=self.cascade.name,
            target=self.target.name,
            problem=self.problem,
            passes=self.report.passes,
            buffer_bytes=one(r["buffer_bytes"]),
            buffer_capacity_bytes=capacity,
            fits=bool(np.asarray(r["fits"]).reshape(-1)[0]),
            traffic_bytes=one(r["traffic_bytes"]),
            traffic_by_level={dram_name: one(r["traffic_bytes"]), buffer_name: one(r["buffer_traffic_bytes"])},
            compute_ops=compute_ops,
            latency_s=latency,
            bound=bound,
            utilization=utilization,
            energy_j=one(r["energy_j"]),
            energy_by_component={k: one(v) for k, v in r["energy_by_component"].items()},
            per_einsum=per_einsum,
            notes=tuple(notes),
            mapping=self.mapping.describe([int(np.atleast_1d(c["query_block"])[0]) for c in choices],
                                          [str(np.atleast_1d(c["spill"])[0]) for c in choices]),
        )

    def _bound(self, choices) -> str:
        """§4.4 the component that sets the latency of the groups that take the most time."""
        totals: dict[str, float] = {}
        for group, choice in zip(self.groups, choices):
            r = self.evaluate_group(group, np.atleast_1d(choice["query_block"])[:1], str(np.atleast_1d(choice["spill"])[0]))
            times = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in r["times"].items()}
            latency = float(np.asarray(r["latency_s"]).reshape(-1)[0])
            name = max(("dram", "global_buffer", "schedule"), key=lambda k: times[k])
            if name == "schedule":
                name = max(("pe_2d", "pe_1d"), key=lambda k: times[k])
                if self.mapping.schedule == "sequential" and times[name] < 0.999 * times["schedule"]:
                    name = "schedule (array drain and dependences)"
            name = {"dram": self.dram.name, "global_buffer": self.buffer_level.name}.get(name, name)
            totals[name] = totals.get(name, 0.0) + latency
        return max(totals, key=totals.get)

    def _einsum_buffer_bytes(self, node: Node, choices) -> float:
        """On-chip bytes an Einsum keeps live: its per-query output state or live rows for a
        query block, else one tile."""
        block = float(np.atleast_1d(choices[node.group]["query_block"])[0])
        info = self.tensors[node.name]
        if info.role == "query" or any(t == node.name for t, _, _, _ in self.groups[node.group].live):
            return self.word * info.per_query * block
        return self.word * min(self.mapping.query_tile, block) * (node.row_extent if node.unit == "pe_2d" else 1)

    def _describe(self, choices) -> str:
        mapping = self.mapping
        parts = [mapping.dataflow]
        if mapping.key_tile is not None:
            parts.append(f"key tile {mapping.key_tile}")
        parts.append(f"query tile {mapping.query_tile}")
        blocks = [int(np.atleast_1d(c["query_block"])[0]) for c in choices]
        parts.append("query block " + "/".join(str(b) for b in blocks))
        parts.append(mapping.schedule)
        if len(mapping.groups) > 1:
            parts.append(f"{len(mapping.groups)} kernels")
        return ", ".join(parts)


# --- per-point costs --------------------------------------------------------------------------


def cycles_per_point(per_point: dict[str, float], exp_unit, vector_pes: int) -> float:
    """§3.2 PE cycles one iteration point costs. A PE's datapath issues one operation per cycle:
    a multiply-accumulate, an add or subtract, a compare (max), a divide; a map and its reduction
    pipeline together (Q*K summed over e is one MAC per point). An exp runs either on an exp unit
    beside the PE (pipelined with the other operations: FLAT) or as `ops_per_exp` sequential MACs
    of the PE itself (FuseMax: 6)."""
    alu = max(per_point["mul"], per_point["add"] + per_point["sub"]) + per_point["max"] + per_point["min"] + per_point["div"]
    if exp_unit.via is not None:
        return max(1.0, alu + per_point["exp"] * exp_unit.ops_per_exp)
    exp_rate = 1.0
    if exp_unit.shape:
        exp_rate = math.prod(exp_unit.shape) * max(1, exp_unit.count or 1) / vector_pes
    return max(1.0, alu, per_point["exp"] / exp_rate)


def compute_energy_per_point(per_point: dict[str, float], unit: str, target, dtype: str, exp_native: bool) -> float:
    """§6 joules of one point's operations: MAC pairs at the MAC energy, the rest by kind."""
    name = target.unit("matrix" if unit == "pe_2d" else "vector").name
    macs = min(per_point["mul"], per_point["add"])
    energy = macs * target.energy_per_op(name, dtype, "mac")
    energy += (per_point["mul"] - macs) * target.energy_per_op(name, dtype, "mul")
    energy += (per_point["add"] - macs) * target.energy_per_op(name, dtype, "add")
    for kind in ("sub", "max", "min", "div"):
        if per_point[kind]:
            energy += per_point[kind] * target.energy_per_op(name, dtype, kind)
    if per_point["exp"]:
        exp_unit = target.unit("exp")
        per_exp = target.energy_per_op(exp_unit, dtype) if exp_native else exp_unit.ops_per_exp * target.energy_per_op(name, dtype, "mac")
        energy += per_point["exp"] * per_exp
    return energy


def problem_kv_share(problem: Problem) -> float:
    """K and V counted per query head hold each KV head's data group_size times (GQA)."""
    return problem.kv_heads / problem.q_heads


def visible_tile_fraction(problem: Problem, key_tile: int, query_tile: int) -> float:
    """§3.1 fraction of (key_tile x query_tile) tiles with at least one visible (query, key) pair
    under the workload's causal/window mask (einsim's bottom-right alignment, reference.py)."""
    q_len, kv_len = problem.q_len, problem.kv_len
    starts = np.arange(0, q_len, max(1, query_tile))
    ends = np.minimum(starts + query_tile, q_len) - 1
    offset = kv_len - q_len
    low = np.zeros(len(starts))
    high = np.full(len(starts), kv_len - 1.0)
    if problem.window is not None:
        left, right = problem.window
        low = starts + offset - left
        high = ends + offset + right
    if problem.causal:
        high = np.minimum(high, ends + offset)
    low, high = np.clip(low, 0, kv_len - 1), np.clip(high, -1, kv_len - 1)
    tiles = np.where(high >= low, np.floor(high / key_tile) - np.floor(low / key_tile) + 1, 0)
    return float(tiles.sum() / (len(starts) * math.ceil(kv_len / key_tile)))


def _fill(extent, dim: int):
    """Fraction of `dim` PEs busy when `extent` values are spread over them in ceil(extent/dim)
    steps (the last one partly empty)."""
    extent = np.asarray(extent, dtype=float)
    return extent / (np.ceil(extent / dim) * dim)


def _live_per_row(group: Group, tensors: dict[str, TensorInfo]) -> float:
    """§5.1 elements per query row live across a pass boundary, at the worst boundary."""
    if not group.live:
        return 0.0
    last = max(max(later) for _, _, later, _ in group.live)
    worst = 0.0
    for boundary in range(1, last):
        crossing = sum(tensors[t].per_query for t, start, later, _ in group.live if start <= boundary < max(later))
        worst = max(worst, crossing)
    return worst


def _on_chip_levels(target, pes_2d: int, pes_1d: int):
    """The shared on-chip buffer (the outermost on-chip level) and the register files of each
    array (on-chip levels with one instance per PE)."""
    on_chip = target.memory_levels[:-1]
    if not on_chip:
        raise ConfigError(f"{target.name}: the spatial model needs an on-chip buffer level before the off-chip one")
    shared = [level for level in on_chip if level.instances == 1]
    buffer_level = shared[-1] if shared else on_chip[-1]
    registers = {}
    for level in on_chip:
        if level.instances == pes_2d and "pe_2d" not in registers:
            registers["pe_2d"] = level
        elif level.instances == pes_1d and "pe_1d" not in registers:
            registers["pe_1d"] = level
    return buffer_level, registers


# --- the simulation --------------------------------------------------------------------------


def simulate_spatial(cascade: Cascade, problem: Problem, target, mapping: Mapping | None = None) -> Estimate:
    """The Estimate of `cascade` for `workload` on a spatial `target` (docs/simulator.md)."""
    if "M" in cascade.ranks and "P" not in cascade.ranks:
        # without P the workload's queries bind nothing: a GEMM here would be costed as one
        # column of the 2D array (0.4 % busy) and its M read as the K/V length
        raise ConfigError(
            f"{cascade.source}: {cascade.name} has no query rank P (ranks: {', '.join(cascade.ranks)}); a workload "
            "simulates attention-shaped cascades (K/V rank M streamed past query rows P kept on chip). "
            "For a GEMM use einsim.simulator.layer.simulate_linear((name, K, N), tokens, target), "
            "or einsim.simulator.layer.simulate_layer for a whole layer")
    design = compile_design(cascade, problem, target, mapping or Mapping())
    return design.estimate(design.choose())


def compile_design(cascade: Cascade, problem: Problem, target, mapping: Mapping, key_rank: str = "M",
                   query_rank: str = "P", sizes: dict[str, int] | None = None) -> Design:
    """The user's mapping resolved against the design's defaults, compiled (§2)."""
    if key_rank not in cascade.ranks:  # a missing query rank is fine: a GEMM's rows are one block
        # the pass analysis would say only "unknown rank 'M'"; say what the model needs and why
        layer = " (a whole layer's FFN: einsim.simulator.layer.simulate_layer, which runs the gemm cascade)" \
            if cascade.name.startswith("ffn") else ""
        raise ConfigError(
            f"{cascade.source}: {cascade.name} has no rank {key_rank} (ranks: {', '.join(cascade.ranks)}); "
            f"the spatial model streams the key rank {key_rank} (attention's K/V length, a GEMM's output features) "
            f"past rows of the query rank {query_rank} kept on chip: name the streamed rank {key_rank}, "
            f"or simulate it on a GPU target{layer}")
    report = _passes(cascade, key_rank)
    resolved = resolve_mapping(mapping, cascade, target, report, problem)
    return Design(cascade, problem, target, resolved, report, query_rank, sizes)


@lru_cache(maxsize=256)
def _passes(cascade: Cascade, key_rank: str) -> PassReport:
    return analyze_passes(cascade, key_rank)


def _pick(latency, traffic, energy, blocks) -> np.ndarray:
    """Per row: the column with the least latency (within 1e-9), then traffic, then energy,
    then the largest block."""
    finite = np.where(np.isfinite(latency), latency, np.inf)
    best = np.min(finite, axis=-1, keepdims=True)
    ok = finite <= best * (1 + 1e-9)
    ok = np.where(np.isfinite(best), ok, True)  # nothing fits: every block is as bad
    for key in (traffic, energy, -np.broadcast_to(blocks, latency.shape)):
        masked = np.where(ok, key, np.inf)
        low = np.min(masked, axis=-1, keepdims=True)
        ok = ok & (masked <= low + np.abs(low) * 1e-9)
    return np.argmax(ok, axis=-1)


def _lexless(a, b) -> np.ndarray:
    """Column-wise: is (a[0], a[1]) lexicographically smaller than (b[0], b[1])?"""
    return (a[0] < b[0] * (1 - 1e-9)) | ((a[0] <= b[0] * (1 + 1e-9)) & (a[1] < b[1]))


def _select(mask, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in new.items():
        if isinstance(value, dict):
            out[key] = {k: np.where(mask, v, old[key][k]) for k, v in value.items()}
        else:
            out[key] = np.where(mask, value, old[key])
    return out
