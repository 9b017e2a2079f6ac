"""The default mapping search of a compiled design (docs/simulator.md §2.3): per fusion group, the
query block, spill policy and (FLAT) staging plan with the least latency, then the least DRAM
traffic, then the least energy, then the largest block; vectorised over buffer capacities so
`--buffer-sweep` re-chooses at every capacity in one pass."""

from __future__ import annotations

from typing import Any

import numpy as np


def choose(design, capacity=None) -> list[dict[str, Any]]:
    """Per group, the choice (arrays over the capacities when `capacity` is an array)."""
    blocks = np.array(design.mapping.query_blocks, dtype=float)
    caps = np.atleast_1d(np.asarray(design.buffer_level.capacity_bytes if capacity is None else capacity, dtype=float))
    rows = np.arange(len(caps))
    choices = []
    for group in design.groups:
        best_key = best_block = best_spill = best_plan = None
        for plan in design.plans[group.index]:
            for spill in design.mapping.spills:
                r = design.evaluate_group(group, blocks[None, :], spill, caps[:, None], plan=plan)
                index = pick(r["latency_s"], r["traffic_bytes"], r["energy_j"], blocks)
                key = np.stack([r["latency_s"][rows, index], r["traffic_bytes"][rows, index]])
                if best_key is None:
                    better = np.ones(len(caps), dtype=bool)
                    best_key, best_block = key, blocks[index]
                    best_spill, best_plan = np.full(len(caps), spill, dtype=object), np.full(len(caps), None, dtype=object)
                else:
                    better = lexless(key, best_key)
                    best_key = np.where(better, key, best_key)
                    best_block = np.where(better, blocks[index], best_block)
                    best_spill = np.where(better, spill, best_spill)
                for i in np.flatnonzero(better):
                    best_plan[i] = plan
        choices.append({"query_block": best_block, "spill": best_spill, "plan": best_plan})
    return choices


def evaluate_choice(design, choices: list[dict[str, Any]], capacity=None) -> dict[str, Any]:
    """The model at per-group choices (from `choose`), over the same capacities."""
    return total(evaluate_parts(design, choices, capacity))


def evaluate_parts(design, choices: list[dict[str, Any]], capacity=None) -> list[dict[str, Any]]:
    """Each group at its choice, over the same capacities (what `total` adds up)."""
    parts = []
    for group, choice in zip(design.groups, choices):
        blocks = np.atleast_1d(choice["query_block"]).astype(float)
        spills = np.atleast_1d(choice["spill"])
        plans = np.atleast_1d(choice.get("plan", np.full(len(blocks), None, dtype=object)))
        part = None
        variants = {(str(s), id(p)): (str(s), p) for s, p in zip(spills, plans)}
        for spill, plan in variants.values():
            r = design.evaluate_group(group, blocks, spill, capacity, plan=plan)
            if part is None:
                part = r
            else:
                mask = np.array([str(s) == spill and p is plan for s, p in zip(spills, plans)])
                part = select(mask, r, part)
        parts.append(part)
    return parts


def total(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Groups run one after another: latencies, traffic and energy add; the buffer need is the
    largest group's."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = {k: v.copy() for k, v in value.items()} if isinstance(value, dict) else np.array(value, copy=True)
            elif key in ("buffer_bytes", "spill_fraction"):
                out[key] = np.maximum(out[key], value)
            elif key in ("fits", "feasible"):
                out[key] = out[key] & value
            elif isinstance(value, dict):
                for k, v in value.items():
                    out[key][k] = out[key][k] + v if k in out[key] else v
            else:
                out[key] = out[key] + value
    return out


def pick(latency, traffic, energy, blocks) -> np.ndarray:
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


def lexless(a, b) -> np.ndarray:
    """Column-wise: is (a[0], a[1]) lexicographically smaller than (b[0], b[1])?"""
    return (a[0] < b[0] * (1 - 1e-9)) | ((a[0] <= b[0] * (1 + 1e-9)) & (a[1] < b[1]))


def select(mask, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in new.items():
        if isinstance(value, dict):
            out[key] = {k: np.where(mask, v, old[key][k]) for k, v in value.items()}
        else:
            out[key] = np.where(mask, value, old[key])
    return out
