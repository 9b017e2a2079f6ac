"""Bytes a fused attention kernel moves, pass by pass: inputs along the key rank (K, V, a bias
[H, P, M]) streamed from HBM once per key/value head and through L2 once per visiting query
tile, inputs along the query rank (Q) staged once per program, intermediates that cross passes
written and read back at the mapping's precision, split-KV partials, outputs written once
(docs/simulator.md § GPU cost model, "Traffic")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from einsim.simulator.gpu_cost.cascade_plan import PassPlan
from einsim.tiling import TileCounts

SPLIT_PARTIAL_BYTES = 4  # split-KV partial outputs and statistics are fp32


@dataclass
class Traffic:
    """HBM reads and writes of each pass by tensor, L2 and shared-memory bytes, and the bytes
    attributed to each Einsum (the first reader of an input, the producer of an output)."""

    reads: dict[int, dict[str, float]]
    writes: dict[int, dict[str, float]]
    l2_bytes: float
    smem_bytes: float
    split_bytes: float = 0.0
    attributed: dict[str, float] = field(default_factory=dict)

    def pass_bytes(self, k: int) -> float:
        return sum(self.reads[k].values()) + sum(self.writes[k].values())

    @property
    def hbm_read(self) -> float:
        return sum(sum(r.values()) for r in self.reads.values()) + self.split_bytes / 2

    @property
    def hbm_write(self) -> float:
        return sum(sum(w.values()) for w in self.writes.values()) + self.split_bytes / 2

    @property
    def hbm_bytes(self) -> float:
        return self.hbm_read + self.hbm_write


def attention_traffic(plan: PassPlan, problem: Any, sizes: dict[str, int], tiles: TileCounts, heads_of_programs: int,
                      splits: int, intermediate_bytes: int, l2_reread: float = 1.0) -> Traffic:
    """Traffic of every pass (cached per plan, problem and layout; see _attention_traffic)."""
    key = (id(plan), problem, tuple(sorted(sizes.items())), tiles.block_m, tiles.block_n, heads_of_programs, splits,
           intermediate_bytes, l2_reread)
    found = _TRAFFIC.get(key)
    if found is None:
        if len(_TRAFFIC) > 4096:
            _TRAFFIC.clear()
        found = _TRAFFIC[key] = _attention_traffic(plan, problem, sizes, tiles, heads_of_programs, splits,
                                                   intermediate_bytes, l2_reread)
    return found


_TRAFFIC: dict[tuple, Traffic] = {}


def _attention_traffic(plan: PassPlan, problem: Any, sizes: dict[str, int], tiles: TileCounts, heads_of_programs: int,
                       splits: int, intermediate_bytes: int, l2_reread: float = 1.0) -> Traffic:
    """Traffic of every pass. `tiles` are the query tiles' visits (one head), `heads_of_programs`
    the heads the programs are laid over (K/V heads when GQA packs a group into one program),
    `l2_reread` how many times K/V come from HBM because a head's K/V leaves L2 between its
    query tiles (1: they stay)."""
    cascade = plan.cascade
    word = problem.dtype_bytes
    family_m, family_p = plan.family_m, plan.family_p
    kv_fraction = _kv_visited_fraction(tiles, problem.kv_len)
    streamed, staged, per_key_bytes = {}, {}, {}
    for name, ranks in cascade.inputs.items():
        elements = float(cascade.tensor_elements(name, sizes))
        ranks_set = set(ranks)
        if ranks_set & family_m and not ranks_set & family_p:
            share = problem.kv_heads / problem.q_heads if "H" in ranks_set and "G" not in ranks_set else 1.0
            streamed[name] = elements * word * share * kv_fraction * l2_reread
            heads_in_tensor = problem.kv_heads if "G" in ranks_set else (problem.q_heads if "H" in ranks_set else 1)
            per_key_bytes[name] = elements * word / (problem.batch * heads_in_tensor * problem.kv_len)
        else:
            staged[name] = elements * word
    traffic = Traffic({k: {} for k in range(1, plan.passes + 1)}, {k: {} for k in range(1, plan.passes + 1)}, 0.0, 0.0,
                      attributed={e.output: 0.0 for e in cascade.einsums})
    reads_per_pass = plan.inputs_per_pass()
    for k, names in sorted(reads_per_pass.items()):
        for tensor, reader in names.items():
            amount = streamed.get(tensor, staged.get(tensor, 0.0))
            traffic.reads[k][tensor] = amount
            traffic.attributed[reader] += amount
    producers = {e.output for e in cascade.einsums}
    for name in cascade.outputs:
        amount = float(cascade.tensor_elements(name, sizes)) * word
        traffic.writes[plan.report.einsum_pass.get(name, plan.passes)][name] = amount
        if name in producers:
            traffic.attributed[name] += amount
    crossing_bytes = 0.0
    for tensor, (made_in, read_in) in plan.crossing().items():
        amount = float(cascade.tensor_elements(tensor, sizes)) * intermediate_bytes * _visited_share(
            cascade.tensors[tensor], cascade.tensor_shape(tensor, sizes), family_m, family_p, tiles)
        traffic.writes[made_in][tensor] = amount
        for k in read_in:
            traffic.reads[k][tensor] = amount
        traffic.attributed[tensor] += amount * (1 + len(read_in))
        crossing_bytes += amount * (1 + len(read_in))
    if splits > 1:
        traffic.split_bytes = 2.0 * problem.batch * problem.q_heads * problem.q_len * (problem.v_head_dim + 2) \
            * SPLIT_PARTIAL_BYTES * splits
        traffic.attributed[cascade.einsums[-1].output] += traffic.split_bytes
    # every program reads its visited K/V tiles through L2 (Q once, O written once)
    tiles_total = tiles.visited_pairs * problem.batch * heads_of_programs
    l2_kv = sum(tiles_total * tiles.block_n * per_key_bytes[t] for names in reads_per_pass.values()
                for t in names if t in per_key_bytes)
    q_staged = sum(amount for reads in traffic.reads.values() for name, amount in reads.items() if name in staged)
    outputs = sum(float(cascade.tensor_elements(name, sizes)) * word for name in cascade.outputs)
    traffic.l2_bytes = l2_kv + q_staged + outputs + traffic.split_bytes + crossing_bytes
    traffic.smem_bytes = 2.0 * l2_kv + q_staged  # K/V tiles written once, read once by the MMAs
    return traffic


def _kv_visited_fraction(tiles: TileCounts, kv_len: int) -> float:
    """Fraction of K/V positions some query reads, in whole key tiles (a mask that differs per
    head: the mean head's key tiles that some query tile visits)."""
    if tiles.kv_seen is not None:
        return tiles.kv_seen
    if tiles.kv_hi <= tiles.kv_lo:
        return 0.0
    bn = tiles.block_n
    kv_tiles = math.ceil(kv_len / bn)
    seen = min(kv_tiles, (tiles.kv_hi - 1) // bn - tiles.kv_lo // bn + 1)
    return seen * bn / (kv_tiles * bn)


def _visited_share(ranks: Any, shape: tuple[int, ...], family_m: set[str], family_p: set[str],
                   tiles: TileCounts) -> float:
    """Fraction of a tensor's elements on visited tiles: per key ((row, key) pairs of visited
    tiles) if it has a per-key rank, per key tile ((row, tile) pairs) if only a tile rank."""
    m_ranks = [r for r in ranks if r in family_m]
    if not m_ranks:
        return 1.0
    extent = float(math.prod(n for r, n in zip(ranks, shape) if r in family_m or r in family_p))
    per_tile_only = all(r == "M1" for r in m_ranks)
    pairs = tiles.row_tile_pairs if per_tile_only else tiles.row_key_pairs
    return pairs / extent if extent else 0.0


def l2_reread_factor(problem: Any, q_tiles: int, heads_of_programs: int, slots: int, l2_bytes: float) -> float:
    """How many times a head's K/V come from HBM: once when the K/V of the heads whose query
    tiles run at the same time fit in L2 (the query tiles of one head run side by side), more
    when they do not (each query tile then re-reads what fell out), at most once per query tile."""
    kv_bytes_head = problem.kv_len * (problem.head_dim + problem.v_head_dim) * problem.dtype_bytes
    concurrent_heads = max(1.0, slots / max(1, q_tiles))
    group = max(1, problem.q_heads // problem.kv_heads) if heads_of_programs == problem.q_heads else 1
    resident = kv_bytes_head * concurrent_heads / group
    if resident <= l2_bytes:
        return 1.0
    return min(float(q_tiles), resident / l2_bytes)
