"""A dense matmul C[M, N] = A[M, K] B[K, N] (a linear layer of M tokens) as launches of the one
engine: output tiles as programs walking K in steps, cuBLAS-style tile shapes and split-K, the
fastest candidate taken (cuBLAS's heuristics aim for it); and memory-bound element-wise kernels
(docs/simulator.md § GPU cost model, "Layers and models")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from einsim.simulator.gpu_cost.engine import Launch, LaunchTime, ProgramGroup, TileWork, launch_time, memory_launch_time
from einsim.simulator.gpu_cost.resources import residency
from einsim.simulator.gpu_cost.roofs import GpuRoofs
from einsim.simulator.gpu_cost.styles import FittedModel

# (block_m, block_n, block_k, warps, stages): CUTLASS/cuBLAS Hopper tile shapes (two consumer
# warpgroups for 128-row tiles, one for 64)
GEMM_TILES = ((128, 256, 64, 12, 4), (128, 128, 64, 12, 4), (64, 128, 64, 8, 4), (64, 64, 64, 4, 4))
SPLIT_K = (1, 2, 4, 8, 16)
CLUSTER = 2  # programs per thread-block cluster (CUTLASS's default 2x1 on Hopper)


@dataclass(frozen=True)
class GemmCost:
    """A matmul's time and what it chose."""

    m: int
    n: int
    k: int
    time_s: float
    tiles: tuple[int, int, int]
    split_k: int
    launches: tuple[LaunchTime, ...]
    flops: float
    hbm_bytes: float

    @property
    def bound(self) -> str:
        return max(self.launches, key=lambda t: t.time_s).bound


def gemm_cost(m: int, n: int, k: int, dtype_bytes: int, roofs: GpuRoofs, model: FittedModel,
              batch: int = 1) -> GemmCost:
    """The fastest of the candidate tilings of `batch` matmuls of M x K by K x N."""
    best = None
    for tile in GEMM_TILES:
        for split in SPLIT_K:
            if split > 1 and (k // split < tile[2] or math.ceil(m / tile[0]) * math.ceil(n / tile[1]) * batch
                              >= roofs.sm_count):
                continue
            cost = _tiled(m, n, k, dtype_bytes, roofs, model, tile, split, batch)
            if cost is not None and (best is None or cost.time_s < best.time_s):
                best = cost
    return best


def _tiled(m: int, n: int, k: int, s: int, roofs: GpuRoofs, model: FittedModel, tile: tuple, split: int,
           batch: int) -> GemmCost | None:
    bm, bn, bk, warps, stages = tile
    fit = model.gemm
    smem = s * stages * (bm + bn) * bk + 1024
    resident = residency(smem, 0, 0.0, warps * roofs.warp_size, roofs)
    if resident.reasons:
        return None
    steps = math.ceil(k / (bk * split))
    programs = math.ceil(m / bm) * math.ceil(n / bn) * batch * split
    # Hopper GEMMs run in clusters of 2 programs that share the weight tile through TMA multicast
    step = TileWork(macs=float(bm * bn * bk), mma_efficiency=fit.mma_efficiency,
                    load_bytes=float((bm + bn / CLUSTER) * bk * s))
    epilogue = TileWork(fma_ops=float(bm * bn), load_bytes=float(bm * bn * (4 if split > 1 else s)))
    group = ProgramGroup(np.array([float(steps)]), np.array([0.0]), programs, step, step, epilogue, "gemm")
    # A and B read once (L2 serves the re-reads of a panel by the tiles beside it), C written once
    hbm = float(batch) * (m * k + k * n + m * n) * s
    warpgroups = max(1, warps // 4 - 1) if warps > 4 else 1
    # a weight panel is read by ceil(M / block_m) programs, an activation panel by ceil(N / block_n):
    # the loads that miss L2 are one per panel
    miss = (bn / math.ceil(m / bm) + bm / math.ceil(n / bn)) / (bm + bn)
    launches = [Launch("gemm", (group,), hbm, resident.programs_per_sm, warpgroups, stages,
                       hbm_load_fraction=miss, hbm_efficiency=fit.hbm_efficiency)]
    if split > 1:  # the fp32 partial sums, reduced by a second kernel
        launches.append(Launch("split-K reduce", (), float(batch) * m * n * (4 * split + s), memory_only=True))
    times = tuple(launch_time(launch, roofs, 0.0, model.engine, fit.program_latency_s)
                  for launch in launches)
    return GemmCost(m, n, k, sum(t.time_s for t in times), (bm, bn, bk), split, times, 2.0 * batch * m * n * k, hbm)


def elementwise_time(bytes_moved: float, kernels: int, roofs: GpuRoofs, model: FittedModel) -> LaunchTime:
    """`kernels` memory-bound kernels moving `bytes_moved` in total (engine.memory_launch_time)."""
    return memory_launch_time("element-wise", bytes_moved, kernels, roofs, model.engine)
