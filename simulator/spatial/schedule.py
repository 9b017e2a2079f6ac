"""The sequential (in-order, not software-pipelined) schedule of one fusion group's epochs
(docs/simulator.md §4.3): the FuseMax paper's "+Architecture" step."""

from __future__ import annotations

from typing import Any

import numpy as np

# epochs simulated to reach the steady state of the schedule
SCHEDULE_EPOCHS = 6


def sequential_cycles(design, nodes, cycles, epochs) -> np.ndarray:
    """§4.3 each unit runs its Einsums in program order, epoch after epoch; a reduction across the
    2D array's rows drains for `rows` cycles before another unit can read it. Simulated for a few
    epochs to reach the steady-state period, then extrapolated to all `epochs`."""
    duration = {n.name: cycles[n.name] / epochs for n in nodes}
    free = {"pe_2d": 0.0, "pe_1d": 0.0}
    finish: list[dict[str, Any]] = []
    for k in range(SCHEDULE_EPOCHS):
        done: dict[str, Any] = {}
        for node in nodes:
            start = free[node.unit]
            for producer, carried in node.deps:
                source = finish[k - 1] if carried and k else ({} if carried else done)
                if producer not in source:
                    continue
                producer_node = design.node_by_name[producer]
                lag = design.rows if producer_node.drains_rows and producer_node.unit != node.unit else 0
                start = np.maximum(start, source[producer] + lag)
            done[node.name] = start + duration[node.name]
            free[node.unit] = done[node.name]
        finish.append(done)
    first = np.maximum.reduce([finish[0][n.name] for n in nodes])
    last = np.maximum.reduce([finish[-1][n.name] for n in nodes])
    before = np.maximum.reduce([finish[-2][n.name] for n in nodes])
    return first + (epochs - 1) * (last - before)
