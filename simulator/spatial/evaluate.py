"""One fusion group of a compiled design at many mapping points at once: its traffic and buffer
(the resident model §5.1-5.4 or FLAT's staging §5.6), compute time and schedule (§4), latency and
energy (§6), every figure a numpy array over the points."""

from __future__ import annotations

from typing import Any

import numpy as np

from einsim.simulator.spatial.resident import evaluate_resident
from einsim.simulator.spatial.schedule import sequential_cycles
from einsim.simulator.spatial.staging import evaluate_staged


def evaluate_group(design, group, query_block, spill: str = "store", capacity=None, query_tile=None,
                   dram_bandwidth=None, plan=None) -> dict[str, Any]:
    """One fusion group at each query block (and buffer capacity, query tile, bandwidth); `plan`
    is the staging plan of a FLAT group (§5.6), None for the resident model."""
    cap = design.buffer_level.capacity_bytes if capacity is None else capacity
    tile = design.mapping.query_tile if query_tile is None else query_tile
    bandwidth = design.dram.bandwidth("measured") if dram_bandwidth is None else dram_bandwidth
    query_block, cap, tile, bandwidth = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (query_block, cap, tile, bandwidth)))
    query_block = np.minimum(query_block, design.query_len)
    zeros = np.zeros(query_block.shape)
    query_tile = np.minimum(tile, query_block)
    nodes = [design.node_by_name[n] for n in group.einsums]

    if plan is None:
        moved = evaluate_resident(design, group, query_block, spill, cap, query_tile)
    else:
        moved = evaluate_staged(design, group, plan, query_block, cap, design.mapping.buffering)
        moved["extra_cycles"] = {n.name: zeros for n in nodes}
        moved["spill_fraction"] = moved["overbooked"]
    einsum_dram, einsum_buffer = moved["einsum_dram"], moved["einsum_buffer"]
    dram = sum(einsum_dram.values(), zeros.copy())
    buffer_bytes = sum(einsum_buffer.values(), zeros.copy())
    need, feasible = moved["need"], moved["feasible"]

    # §4 compute: cycles per unit (busy, and useful work without idle PEs), then the schedule
    alone = {n.name: design.cycles(n, query_tile) for n in nodes}
    cycles = {n.name: alone[n.name] + moved["extra_cycles"][n.name] for n in nodes}
    # how many times each Einsum runs (> 1 when recomputed; an Einsum whose tiles are all empty: 1)
    repeats = {n.name: np.divide(cycles[n.name], alone[n.name], out=np.ones(query_block.shape),
                                 where=np.broadcast_to(alone[n.name], query_block.shape) > 0) for n in nodes}
    work = {n.name: (n.points * n.cycles_per_point / design.pes(n.unit)) * repeats[n.name] for n in nodes}
    busy = {u: sum((cycles[n.name] for n in nodes if n.unit == u), zeros.copy()) for u in ("pe_2d", "pe_1d")}
    useful = {u: sum((work[n.name] for n in nodes if n.unit == u), zeros.copy()) for u in ("pe_2d", "pe_1d")}
    key_tiles = np.ceil(design.key_len / design.key_tile_rows)
    epochs = float(design.heads_total) * np.ceil(design.query_len / query_tile) * (key_tiles if design.key_inner else 1)
    if design.mapping.schedule == "sequential":
        compute_cycles = sequential_cycles(design, nodes, cycles, epochs)
    else:
        fill = (design.rows + design.cols) if group.uses_2d else design.vector_pes
        compute_cycles = np.maximum(busy["pe_2d"], busy["pe_1d"]) + fill
    clock = design.clock
    times = {"schedule": compute_cycles / clock, "pe_2d": busy["pe_2d"] / clock,
             "pe_1d": busy["pe_1d"] / clock, "dram": dram / bandwidth,
             "global_buffer": buffer_bytes / design.buffer_level.bandwidth("measured")}
    # §4.4 transfers overlap compute
    latency = np.maximum(np.maximum(times["schedule"], times["dram"]), times["global_buffer"])
    latency = np.where(feasible, latency, np.inf)

    # §6 energy
    energy: dict[str, Any] = {}
    einsum_energy = {}
    for node in nodes:
        repeat = repeats[node.name]
        joules = node.energy_per_point * node.points * repeat
        energy[node.unit] = energy.get(node.unit, zeros) + joules
        level = design.register_levels.get(node.unit)
        if level is not None:
            registers = node.register_energy_per_cycle * node.points * node.cycles_per_point * repeat
            energy[level.name] = energy.get(level.name, zeros) + registers
            joules = joules + registers
        einsum_energy[node.name] = joules
    buffer_level, dram_level = design.buffer_level, design.dram
    buffer_j = 0.5 * (buffer_level.read_energy_j_per_byte + buffer_level.write_energy_j_per_byte)
    dram_j = 0.5 * (dram_level.read_energy_j_per_byte + dram_level.write_energy_j_per_byte)
    energy[buffer_level.name] = buffer_bytes * buffer_j
    energy[dram_level.name] = dram * dram_j
    for node in nodes:
        einsum_energy[node.name] = einsum_energy[node.name] + einsum_buffer[node.name] * buffer_j + einsum_dram[node.name] * dram_j
    return {
        "latency_s": latency, "traffic_bytes": dram, "buffer_traffic_bytes": buffer_bytes,
        "buffer_bytes": need, "fits": need <= cap, "feasible": feasible, "spill_fraction": moved["spill_fraction"],
        "energy_j": sum(energy.values(), zeros.copy()), "energy_by_component": energy, "times": times,
        "busy_s": {u: v / clock for u, v in busy.items()}, "work_s": {u: v / clock for u, v in useful.items()},
        "einsum_cycles": cycles, "einsum_dram": einsum_dram, "einsum_buffer": einsum_buffer,
        "einsum_energy": einsum_energy,
    }
