"""What one iteration point costs on a spatial target's arrays: PE cycles (§3.2) and joules (§6),
and how a rank spread over an array's PEs fills it (§4.1)."""

from __future__ import annotations

import math

import numpy as np

from einsim.errors import ConfigError


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


def fill(extent, dim: int):
    """Fraction of `dim` PEs busy when `extent` values are spread over them in ceil(extent/dim)
    steps (the last one partly empty)."""
    extent = np.asarray(extent, dtype=float)
    return extent / (np.ceil(extent / dim) * dim)


def on_chip_levels(target, pes_2d: int, pes_1d: int):
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
