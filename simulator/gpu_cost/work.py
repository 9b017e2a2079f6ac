"""The work a fused attention kernel does per tile, read off the cascade: each Einsum a pass runs,
counted at one (block_m x block_n) tile of one head and put on the unit that executes it —
matmuls on the tensor cores, exp and other special functions on the SFU (with the lane ops they
need), everything else on the FP32 lanes; Einsums that do not iterate the key rank run once per
program (docs/simulator.md § GPU cost model, "Work from the cascade").

A compiled user cascade is just another input: a bias add is one more lane op per score and a
[H, P, M] bias one more tensor read per tile, a tanh soft-cap one more SFU op per score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from einsim.simulator.gpu_cost.cascade_plan import BASIC_OPS, PassPlan, bind, contracted, is_matmul

CONVERT_OPS_PER_ELEMENT = 0.5  # an fp32 intermediate fed to the tensor cores is packed to bf16 (2 per op)
DIV_LANE_OPS = 1.0  # a division is MUFU.RCP (SFU) + one FMUL
SPECIAL_FUNCTION_LANE_OPS = 4.0  # gelu, tanh, elu1, ...: one SFU op and about four FP32 ops


@dataclass
class UnitOps:
    """Operations by unit, and bytes of inputs read."""

    macs: float = 0.0
    sfu: float = 0.0
    fma: float = 0.0
    input_bytes: float = 0.0
    by_einsum: dict[str, dict[str, float]] = field(default_factory=dict)

    def add_einsum(self, name: str, ops: dict[str, float]) -> None:
        row = self.by_einsum.setdefault(name, {})
        for kind, value in ops.items():
            row[kind] = row.get(kind, 0.0) + value


@dataclass(frozen=True)
class PassWork:
    """Per-tile and per-program work of one pass of a kernel."""

    tile: UnitOps  # one (block_m x block_n) tile of one head
    program: UnitOps  # one program, outside the key loop


def einsum_ops(einsum: Any, points: float, sizes: dict[str, int], intermediates: set[str]) -> tuple[str, dict[str, float]]:
    """(unit, operations by kind) of `points` iteration points of an Einsum."""
    if is_matmul(einsum):
        ops = {"mac": points}
        if any(t in intermediates for t in einsum.operand_tensors):
            ops["convert"] = points / contracted(einsum, sizes) * CONVERT_OPS_PER_ELEMENT
        return "tensor_core", ops
    unit, ops = "cuda_core", {}
    dense = float(math.prod(sizes[r] for r in einsum.iteration_ranks)) or 1.0
    # by dependence (docs/simulator.md §3.4): an operation reading some of the ranks runs once per
    # point of those (ALiBi's p + M - P once per query row of the tile, not per score)
    counted = [(kind, points * math.prod(sizes[r] for r in ranks) / dense if not ranks >= set(einsum.iteration_ranks)
                else points) for kind, ranks in einsum.operation_ranks()]
    if einsum.reduce_op:
        counted.append(({"sum": "add", "max": "max", "min": "min"}[einsum.reduce_op], points))
    for kind, count in counted:
        ops[kind] = ops.get(kind, 0.0) + count
        if kind == "exp" or kind not in BASIC_OPS:
            unit = "sfu"
    return unit, ops


def einsum_unit(ops: dict[str, float]) -> str:
    """The unit an Einsum's operations run on: the tensor cores for a matmul, the SFU when it
    applies an exp or another special function, else the FP32 lanes."""
    if "mac" in ops:
        return "tensor_core"
    if any(kind == "exp" or (kind not in BASIC_OPS and kind != "convert") for kind in ops):
        return "sfu"
    return "cuda_core"


def unit_split(ops: dict[str, float]) -> tuple[float, float, float]:
    """(MACs, SFU ops, FP32 lane ops) of an operation count."""
    macs = ops.get("mac", 0.0)
    sfu = fma = 0.0
    for kind, count in ops.items():
        if kind == "mac":
            continue
        if kind == "exp":
            sfu += count
        elif kind == "div":
            sfu += count
            fma += count * DIV_LANE_OPS
        elif kind == "convert" or kind in BASIC_OPS:
            fma += count
        else:  # a special function
            sfu += count
            fma += count * SPECIAL_FUNCTION_LANE_OPS
    return macs, sfu, fma


def pass_work(plan: PassPlan, problem: Any, block_m: int, block_n: int) -> dict[int, PassWork]:
    """Per-tile and per-program work of each pass, for one head (B = H = G = 1), block_m query
    rows and block_n keys; iteration points are counted without the cascade's filters (a kernel
    computes whole tiles; masked tiles are priced by the engine). Cached: only the head dims,
    the dtype and the problem's extra symbols matter, not its lengths, batch or mask."""
    tile_problem = replace(problem, batch=1, q_heads=1, kv_heads=1, q_len=block_m, kv_len=block_n, causal=False,
                           window=None, name="")
    return _pass_work(plan, tile_problem, block_m, block_n)


@lru_cache(maxsize=4096)
def _pass_work(plan: PassPlan, problem: Any, block_m: int, block_n: int) -> dict[int, PassWork]:
    cascade = plan.cascade
    one_head = {r: 1 for r in ("B", "H", "G") if r in cascade.ranks}
    sizes = bind(cascade, problem, block_n, 1, overrides={**one_head, "P": block_m, "M": block_n})
    intermediates = {t for t in cascade.tensors if t not in cascade.inputs}
    work = {k: PassWork(UnitOps(), UnitOps()) for k in range(1, plan.passes + 1)}
    word = problem.dtype_bytes
    for k, einsum in plan.runs():
        points = float(math.prod(sizes[r] for r in einsum.iteration_ranks))
        per_tile = bool(set(einsum.iteration_ranks) & plan.family_m)
        target = work[k].tile if per_tile else work[k].program
        _, ops = einsum_ops(einsum, points, sizes, intermediates)
        macs, sfu, fma = unit_split(ops)
        target.macs += macs
        target.sfu += sfu
        target.fma += fma
        target.add_einsum(einsum.output, ops)
    for k, names in plan.inputs_per_pass().items():
        for tensor in names:
            ranks = set(cascade.inputs[tensor])
            per_tile = bool(ranks & plan.family_m)
            elements = float(cascade.tensor_elements(tensor, sizes))
            (work[k].tile if per_tile else work[k].program).input_bytes += elements * word
    return work
