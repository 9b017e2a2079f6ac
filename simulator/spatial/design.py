"""A cascade, a workload, a spatial target and a resolved mapping compiled once into what the
model evaluates many times (docs/simulator.md §1-§3): tensors with their roles, one Node per
Einsum (array, points, operations, cycles and energy per point), fusion groups with their DRAM
inputs/outputs and live rows, and the staging plans of FLAT groups."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from einsim.einsum_cascades.ir import Cascade
from einsim.einsum_cascades.passes import PassReport, analyze_passes, dependency_graph
from einsim.errors import ConfigError
from einsim.simulator.estimate import Estimate
from einsim.simulator.functions import PRIMITIVES, primitive_counts
from einsim.simulator.mapping import ResolvedMapping
from einsim.simulator.spatial.defaults import array_shape, key_leaf, vector_length
from einsim.simulator.binding import window_binding
from einsim.simulator.spatial import search
from einsim.simulator.spatial.costs import compute_energy_per_point, cycles_per_point, fill, on_chip_levels
from einsim.simulator.spatial.evaluate import evaluate_group
from einsim.simulator.spatial.masks import problem_kv_share, visible_key_tiles, visible_tile_fraction
from einsim.simulator.spatial.report import build_estimate
from einsim.simulator.spatial.parts import Group, Node, TensorInfo
from einsim.simulator.spatial.resident import resident_need
from einsim.simulator.spatial.staging import evaluate_staged, group_plans
from einsim.simulator.spatial.visibility import plane_condition, reads_tensors, visibility
from einsim.problem import Problem



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
        self.buffer_level, self.register_levels = on_chip_levels(target, self.rows * self.cols, self.vector_pes)
        self.dram = target.offchip
        self.key_rank = self.report.rank
        self.key_family = set(self.report.family) or {self.key_rank}
        self.key_inner = key_leaf(cascade, self.key_rank)

        given = dict(problem.rank_sizes())
        given.update(window_binding(cascade, problem))  # the problem's window, or a named error
        given.update(sizes or {})
        if self.key_inner is not None:
            # through its symbol when the tile is one (linear attention's M0 and P0 are both
            # `block`: its diagonal filter m1 == p1 needs them equal)
            declared = cascade.ranks.get(self.key_inner)
            given[declared if isinstance(declared, str) and declared.isidentifier() else self.key_inner] = mapping.key_tile
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

        # §3.1 a causal or windowed problem, and the cascade's own filters, empty (key tile x query
        # tile) tiles the hardware skips: no work, no K/V reads, no live rows
        plane_keys = {self.key_rank} | ({self.key_inner} if self.key_inner else set())
        self.filtered = None
        # filters that read input values (document ids, a block mask) keep the tiles their values
        # keep (Problem.filter_inputs); without values their tiles count as visited (a note says so)
        self.data_dependent_filters = reads_tensors(cascade, plane_keys, self.query_family)
        reads = bool(self.data_dependent_filters) and problem.filter_inputs is not None
        if plane_condition(cascade, plane_keys, self.query_family, keep_reads=reads) is not None:
            given_sizes = {k: v for k, v in given.items() if k != self.key_inner and k != cascade.ranks.get(self.key_inner)}
            self.filtered = visibility(cascade, problem, self.sizes, self.key_tile_rows, min(mapping.query_tile, problem.q_len),
                                       self.key_rank, query_rank, plane_keys, self.query_family,
                                       data_sizes=cascade.bind(given_sizes) if reads else None)
        self.masked = problem.causal or problem.window is not None or self.filtered is not None
        self.tile_density = self.filtered.fraction if self.filtered is not None else (
            visible_tile_fraction(problem, self.key_tile_rows, min(mapping.query_tile, problem.q_len)) if self.masked else 1.0)
        self.tensors = self._tensors()
        self.nodes = self._nodes()
        self.node_by_name = {n.name: n for n in self.nodes}
        self.groups = self._groups()

        # FLAT's staging plans per group (§5.6); (None,): the resident model (§5.1-5.3)
        self.plans = tuple(
            group_plans(self, g, mapping.staging, mapping.stationarity) if mapping.staging not in (None, "resident") else (None,)
            for g in self.groups)

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
            # a running state with no query rank (linear attention's KV[m1+1, e, f]) is carried
            # across the key rank whole: it is state, kept on chip for the head in flight
            state = is_iterative and not has_query
            role = ("plane" if has_query and has_key else "query" if has_query else "key" if has_key
                    else "state" if state else "other")
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
        graph = _dependency_graph(cascade)
        group_of = {name: i for i, group in enumerate(mapping.groups) for name in group}
        exp_unit = target.unit("exp")
        exp_native = exp_unit.via is None
        dtype = target.default_dtype
        nodes = []
        for einsum in cascade.einsums:
            name = einsum.output
            unit = mapping.binding[name]
            ranks = set(einsum.iteration_ranks)
            dense = float(math.prod(self.sizes[r] for r in einsum.iteration_ranks)) * self.head_factor
            if self.masked and ranks & self.key_family and ranks & self.query_family:
                # the hardware computes whole visited tiles: the tile density of the mask and the
                # cascade's filters sets the work, not the exact count of the points they keep
                points = dense * self.tile_density
            elif any(f.tensors for f in einsum.filters):
                points = dense  # kept points depend on input values: counted as all computed
            else:
                points = float(einsum.iteration_points(self.sizes)) * self.head_factor
            per_point = {k: 0.0 for k in PRIMITIVES}
            # §3.3 functions as primitives; an operation reading only some ranks spread over the points
            per_point.update(primitive_counts(einsum.operations_per_point(self.sizes)))
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
                register_energy_per_cycle=self.register_energy(unit),
            ))
        return tuple(nodes)

    def register_energy(self, unit: str) -> float:
        level = self.register_levels.get(unit)
        if level is None:
            return 0.0
        # the level's word reads and writes per PE-cycle (§6; 2 and 1 unless the target says)
        return self.word * (level.reads_per_cycle * level.read_energy_j_per_byte + level.writes_per_cycle * level.write_energy_j_per_byte)

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
            in_place = {n for n in names if self._in_place(n, names, producer, consumers)}
            inputs, outputs, resident = [], [], []
            for name in names:
                for tensor in producer[name].operand_tensors:
                    if tensor not in members and tensor not in inputs:
                        inputs.append(tensor)
                    if self.tensors[tensor].role == "query" and tensor not in resident and tensor not in in_place:
                        resident.append(tensor)
                if any(c not in members for c in consumers.get(name, ())) or name in cascade.outputs:
                    outputs.append(name)
                if self.tensors[name].role == "query" and name not in resident and name not in in_place:
                    resident.append(name)
            live = self._live(names, producer, consumers)
            units = {self.node_by_name[n].unit for n in names}
            groups.append(Group(index, tuple(names), tuple(inputs), tuple(outputs), tuple(resident), live, "pe_2d" in units))
        return tuple(groups)

    def _in_place(self, name: str, names, producer, consumers) -> bool:
        """§5.1 a per-query result written over a per-query operand of its size that nothing reads
        after it (AV = RNV / RD overwrites RNV, linear attention's FQ = elu1(Q) overwrites Q) takes no
        room of its own (the artifact's P1 rule counts Q, RM, RD and RNV, proposal.py)."""
        order = {n: i for i, n in enumerate(names)}
        size = self.tensors[name].per_query
        if self.tensors[name].role != "query":
            return False
        for operand in producer[name].operand_tensors:
            readers = [c for c in consumers.get(operand, ()) if c in order]
            if (self.tensors[operand].role == "query" and self.tensors[operand].per_query == size
                    and readers and max(readers, key=order.get) == name and operand not in self.cascade.outputs):
                return True
        return False

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
        bandwidth (broadcastable arrays): mapping or design points of a sweep. A FLAT group runs
        under its first staging plan. The default mapping instead chooses per group (`choose`)."""
        if spill in ("store", "recompute") and self.plans and self.plans[0][0] is not None:
            spill = "overbook"
        return search.total([self.evaluate_group(g, query_block, spill, capacity, query_tile, dram_bandwidth, self.plans[g.index][0])
                             for g in self.groups])

    def evaluate_group(self, group: Group, query_block, spill: str = "store", capacity=None, query_tile=None,
                       dram_bandwidth=None, plan=None) -> dict[str, Any]:
        """One fusion group at each query block (and buffer capacity, query tile, bandwidth)."""
        return evaluate_group(self, group, query_block, spill, capacity, query_tile, dram_bandwidth, plan)

    def choose(self, capacity=None) -> list[dict[str, Any]]:
        """§2.3 per group, the query block, spill policy and staging plan with the least latency,
        then the least DRAM traffic, then the least energy, then the largest block. With an array
        of capacities (--buffer-sweep) each entry of the returned lists holds arrays over them."""
        return search.choose(self, capacity)

    def evaluate_choice(self, choices: list[dict[str, Any]], capacity=None) -> dict[str, Any]:
        """The model at per-group choices (from `choose`), over the same capacities."""
        return search.evaluate_choice(self, choices, capacity)

    def estimate(self, choices: list[dict[str, Any]]) -> Estimate:
        """The Estimate at per-group choices (docs/simulator.md §7 says what each field means)."""
        return build_estimate(self, choices)

    def needed_buffer_bytes(self, plans=None) -> float:
        """§5.1 the least buffer the design runs in without spilling or overbooking: its need at
        one array-wide tile of queries (the largest group's), whatever the capacity. Constant in
        the sequence length for a 1-pass cascade; FLAT's fused rows grow with it."""
        plans = plans or [p[0] for p in self.plans]
        block = np.array([min(self.mapping.query_tile, self.query_len)], dtype=float)
        tile = np.minimum(float(self.mapping.query_tile), block)
        needs = []
        for group, plan in zip(self.groups, plans):
            if plan is None:
                fixed, live, _, _ = resident_need(self, group, block, np.inf, tile)
                needs.append(float((fixed + live)[0]))
            else:
                needs.append(float(evaluate_staged(self, group, plan, block, np.inf, self.mapping.buffering)["need"][0]))
        return max(needs)

    def block_density(self, blocks) -> np.ndarray:
        """Fraction of key tiles a query block sees, per block size (masked or filtered)."""
        if self.filtered is not None:
            return self.filtered.block_fraction(blocks)
        blocks = np.asarray(blocks, dtype=float)
        values = {b: visible_key_tiles(self.problem, self.key_tile_rows, int(b))[0] for b in np.unique(blocks)}
        return np.vectorize(values.get, otypes=[float])(blocks)

    def key_coverage(self, group: Group) -> float:
        """The least share of K and V a group reads however few tiles its blocks see: all of it
        when an Einsum reads the keys without the queries (linear attention's state KVL), else
        the keys some query sees."""
        for name in group.einsums:
            ranks = set(self.cascade.einsum(name).iteration_ranks)
            if ranks & self.key_family and not ranks & self.query_family:
                return 1.0
        if self.filtered is not None:
            return self.filtered.key_share
        return 1.0

    @property
    def live_fraction(self) -> float:
        """§5.1 the most keys a row sees, over the key length (whole key tiles, per query tile):
        the share of a row of QK a block keeps live (a window's, not the whole sequence's)."""
        if self.filtered is not None:
            return self.filtered.live_fraction
        if not self.masked:
            return 1.0
        return visible_key_tiles(self.problem, self.key_tile_rows, min(self.mapping.query_tile, self.problem.q_len))[1]

    def pes(self, unit: str) -> int:
        return self.rows * self.cols if unit == "pe_2d" else self.vector_pes

    def cycles(self, node: Node, query_tile) -> np.ndarray:
        """§4.1 cycles of an Einsum on its unit: points x cycles per point over the busy PEs."""
        if node.unit == "pe_2d":
            occupancy = fill(node.row_extent, self.rows) * (fill(query_tile, self.cols) if node.iterates_query else 1.0 / self.cols)
        elif self.mapping.key_rank_1d and node.key_extent:
            occupancy = fill(node.key_extent, self.vector_pes)
        elif node.iterates_query:
            occupancy = fill(query_tile, self.vector_pes)
        elif node.key_extent:
            occupancy = fill(node.key_extent, self.vector_pes)
        else:
            occupancy = 1.0 / self.vector_pes
        return node.points * node.cycles_per_point / (self.pes(node.unit) * occupancy)

    def readers(self, group: Group, tensor: str) -> list[str]:
        return [n for n in group.einsums if tensor in self.node_by_name[n].operands]

    def chain(self, group: Group, tensor: str) -> tuple[list[str], list[str]]:
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


@lru_cache(maxsize=256)
def _dependency_graph(cascade: Cascade):
    """One dependency graph per cascade (designs of one cascade at many points share it)."""
    return dependency_graph(cascade)
