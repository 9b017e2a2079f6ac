"""Does a kernel mapping fit on an SM, and how many of its programs are resident at once: shared
memory, registers (with spills) and threads (docs/simulator.md § GPU cost model, "Resources")."""

from __future__ import annotations

import math
from dataclasses import dataclass

from einsim.simulator.gpu_cost.roofs import GpuRoofs

RESERVED_SHARED_MEMORY = 1024  # CUDA reserves 1 KiB of shared memory per resident block
MAX_REGISTERS_PER_THREAD = 255
MAX_PROGRAMS_PER_SM = 32


@dataclass(frozen=True)
class RegisterModel:
    """Registers a thread of a flash-attention program asks for: a base (addresses, loop state)
    plus its share of the fp32 accumulator (block_m x Dv), the scores (block_m x block_n) and the
    K tile (block_n x D); least squares over compiled kernels' ptxas counts (fitted.yaml)."""

    base: float
    per_accumulator: float
    per_score: float
    per_key: float

    def registers(self, block_m: int, block_n: int, head_dim: int, value_dim: int, threads: int) -> tuple[int, float]:
        """(registers per thread, fraction of the tile state spilled to local memory)."""
        state = (self.per_accumulator * block_m * value_dim + self.per_score * block_m * block_n
                 + self.per_key * block_n * head_dim)
        wanted = self.base + state / threads
        if wanted <= MAX_REGISTERS_PER_THREAD:
            return int(math.ceil(wanted / 8) * 8), 0.0
        spilled = (wanted - MAX_REGISTERS_PER_THREAD) / max(1.0, state / threads)
        return MAX_REGISTERS_PER_THREAD + 1, min(1.0, spilled)


@dataclass(frozen=True)
class Residency:
    """What one program of a mapping needs and how many fit on an SM."""

    smem_bytes: int
    registers_per_thread: int
    spilled_fraction: float
    programs_per_sm: int  # 0: does not fit
    limited_by: str
    reasons: tuple[str, ...]  # why it cannot run (empty when it can)


def residency(smem_bytes: int, registers_per_thread: int, spilled_fraction: float, threads: int,
              roofs: GpuRoofs) -> Residency:
    """Programs per SM: the least that shared memory, registers, threads and program slots allow;
    a program over the per-block shared memory or with no slot is a reason, never a time."""
    reasons = []
    per_block = roofs.smem_bytes_per_sm - RESERVED_SHARED_MEMORY
    if smem_bytes > per_block:
        reasons.append(f"needs {smem_bytes} bytes of shared memory per program, the GPU allows {int(per_block)}")
    register_file = roofs.registers_bytes_per_sm / 4
    limits = {
        "shared memory": int(roofs.smem_bytes_per_sm // max(1, smem_bytes + RESERVED_SHARED_MEMORY)),
        "registers": int(register_file // max(1, min(registers_per_thread, 256) * threads)),
        "threads": int(roofs.max_threads_per_sm // max(1, threads)),
        "program slots": MAX_PROGRAMS_PER_SM,
    }
    limited_by = min(limits, key=lambda name: limits[name])
    programs = max(0, limits[limited_by])
    if programs == 0 and not reasons:
        reasons.append(f"no program fits on an SM (limited by {limited_by})")
    return Residency(smem_bytes, registers_per_thread, spilled_fraction, 0 if reasons else programs,
                     limited_by, tuple(reasons))
