"""The resident model of one fusion group (docs/simulator.md §5.1-5.4): per-query state and live
rows kept in the global buffer for a query block, key tiles streamed (re-read per block, or kept
whole when they fit), rows that do not fit spilled by storing or recomputing them. FuseMax, the
unfused baseline and the FuseMax paper's reading of FLAT (`staging: resident`) use it."""

from __future__ import annotations

import math

import numpy as np


def live_per_row(group, tensors) -> float:
    """§5.1 elements per query row live across a pass boundary, at the worst boundary."""
    if not group.live:
        return 0.0
    last = max(max(later) for _, _, later, _ in group.live)
    worst = 0.0
    for boundary in range(1, last):
        crossing = sum(tensors[t].per_query for t, start, later, _ in group.live if start <= boundary < max(later))
        worst = max(worst, crossing)
    return worst


def resident_need(design, group, query_block, cap, query_tile):
    """§5.1 the buffer need of one query block: per-query state, the streamed key tiles
    (`buffering` copies), plane tiles read from DRAM, live rows; and how the key tiles stream."""
    word, tensors, copies = design.word, design.tensors, float(design.mapping.buffering)
    resident = sum((tensors[t].per_query for t in group.resident_query), 0.0)
    key_inputs = [t for t in group.inputs if tensors[t].role == "key"]
    plane_tiles = copies * design.rows * design.cols * sum(1 for t in group.inputs if tensors[t].role == "plane")
    # a key tile (M0 x E) is loaded whole and reused by every query tile of the block; if even
    # that does not fit, it streams in array-width chunks and is re-read per query tile instead
    # (a GEMM with a long reduction on a small buffer)
    whole = copies * design.key_tile_rows * sum(tensors[t].per_key for t in key_inputs)
    chunked = copies * design.key_tile_rows * sum(min(tensors[t].per_key, design.cols) for t in key_inputs)
    # a running state with no query rank (linear attention's E x F per head) for the head in flight
    state = sum((tensors[t].elements / design.heads_total for t in group.einsums if tensors[t].role == "state"), 0.0)
    base = word * (resident * query_block + plane_tiles + state)
    tile_reuse = base + word * whole <= cap
    fixed = base + word * np.where(tile_reuse, whole, chunked)
    # a mask or filter that empties key tiles leaves fewer keys live per row (§3.1)
    live = word * live_per_row(group, tensors) * query_block * design.live_fraction
    return fixed, live, tile_reuse, key_inputs


def evaluate_resident(design, group, query_block, spill: str, cap, query_tile) -> dict:
    """Buffer need, spills, DRAM and global-buffer bytes per Einsum, and the cycles recomputation
    adds, at each query block (arrays broadcast together)."""
    word, tensors = design.word, design.tensors
    zeros = np.zeros(query_block.shape)
    nodes = [design.node_by_name[n] for n in group.einsums]
    key_tiles = math.ceil(design.key_len / design.key_tile_rows)
    query_tiles = np.ceil(design.query_len / query_tile)

    fixed, live, tile_reuse, key_inputs = resident_need(design, group, query_block, cap, query_tile)
    need = fixed + live
    feasible = fixed <= cap
    spill_fraction = np.clip((need - cap) / np.where(live > 0, live, 1.0), 0.0, 1.0)
    spill_fraction = np.where(live > 0, np.where(feasible, spill_fraction, 1.0), 0.0)
    key_full = word * design.key_len * sum(tensors[t].per_key for t in key_inputs)
    key_resident = (need + key_full <= cap) & (spill_fraction == 0)
    streamed_per = np.where(tile_reuse, query_block, query_tile)
    rereads = np.ceil(design.query_len / streamed_per)
    if design.masked:  # a query block reads only the key tiles its rows can see
        rereads = rereads * design.block_density(np.maximum(1.0, streamed_per / design.problem.group_size))
        rereads = np.maximum(rereads, design.key_coverage(group))
    rereads = np.where(key_resident, 1.0, rereads)

    # §5.2 DRAM traffic: inputs (key tensors once per query block), outputs, spills
    einsum_dram = {n.name: zeros.copy() for n in nodes}
    first_reader: dict[str, str] = {}
    for node in nodes:
        for t in node.operands:
            first_reader.setdefault(t, node.name)
    density = design.tile_density  # §3.1 a plane tensor exists on the visited tiles only

    def elements(t: str) -> float:
        return tensors[t].elements * (density if tensors[t].role == "plane" else 1.0)

    for t in group.inputs:
        info = tensors[t]
        einsum_dram[first_reader[t]] += word * elements(t) * info.kv_scale * (rereads if info.role == "key" else 1.0)
    for t in group.outputs:
        einsum_dram[t] += word * elements(t)
    extra_cycles = {n.name: zeros.copy() for n in nodes}
    for tensor, _, later, produced_here in group.live:
        readers = design.readers(group, tensor)
        if spill == "store" or not produced_here:
            # written once (unless it came from DRAM anyway), read back by every later pass
            spilled = word * elements(tensor) * spill_fraction
            if produced_here:
                einsum_dram[tensor] += spilled
            for reader in readers:
                einsum_dram[reader] += spilled * len(later) / len(readers)
        else:  # §5.3 recompute its producer chain in every later pass that reads it
            chain, chain_keys = design.chain(group, tensor)
            for name in chain:
                extra_cycles[name] = extra_cycles[name] + spill_fraction * len(later) * design.cycles(design.node_by_name[name], query_tile)
            for t in chain_keys:
                moved = word * tensors[t].elements * tensors[t].kv_scale * rereads * spill_fraction * len(later)
                einsum_dram[first_reader.get(t, tensor)] += moved

    # §5.4 global-buffer traffic: every DRAM byte passes through the buffer once (written on
    # fill, read on drain); operand tiles into the arrays, per-query state read and written once
    # per key tile, live rows kept on chip
    einsum_buffer = {n.name: 2.0 * einsum_dram[n.name] for n in nodes}
    for node in nodes:
        moved = 0.0
        for t in node.operands:
            info = tensors[t]
            if info.role == "key":  # once per visited (key tile, query tile)
                moved = moved + word * info.elements * info.kv_scale * query_tiles * density
            elif info.role == "query":
                moved = moved + word * info.elements * (key_tiles * density if node.key_extent else 1)
        if tensors[node.name].role in ("query", "state"):
            moved = moved + word * tensors[node.name].elements * (key_tiles * density if node.key_extent else 1)
        einsum_buffer[node.name] += moved
    for tensor, _, later, produced_here in group.live:
        readers = design.readers(group, tensor)
        kept = word * elements(tensor) * (1.0 - spill_fraction) * ((1 if produced_here else 0) + len(readers))
        einsum_buffer[tensor if produced_here else readers[0]] += kept
    return {"einsum_dram": einsum_dram, "einsum_buffer": einsum_buffer, "extra_cycles": extra_cycles,
            "need": need, "feasible": feasible, "spill_fraction": spill_fraction}
