"""How einsim's Triton kernels lay out one program, in the numbers both sides of the layer table
need: the kernels check and launch their configs with them (einsim.kernels), the GPU cost model
prices a mapping of the same kernels with them (einsim.simulator.gpu_cost). Those two sit side by
side and import nothing from each other, so each rule lives here, below both, once; a change to
a kernel's resource model changes its price in the same commit.

Bottom layer: plain arithmetic on sizes, no einsim imports.
"""

from __future__ import annotations

# Barriers and bookkeeping Triton allocates beside a program's tiles (measured: +1024 bytes with
# TMA; the compiled kernels' metadata matches the formulas below to the byte, docs/performance.md).
SHARED_MEMORY_OVERHEAD = 1024
MIN_TILE_DIM = 16  # tl.dot's smallest operand dimension

# The chunked linear-attention walk's default launch (kernels/linear, docs/linear-attention.md),
# the fastest of the configs timed on the H200 in window W4 (64k tokens, H=16, D=128, bf16,
# Triton 3.6; benchmarks/data/h200_linear_w4.csv): 64-token chunks (fla's too), 64 state
# columns, 4 warps (one warpgroup: 8 warps split every 64-row dot in two and took 1.28 ms where
# 4 took 0.86-0.94), 3 stages for the forward (the third hides a chunk's loads behind the
# previous chunk: 0.862 vs 0.962 ms at 8192-token segments) and 2 for the backward (the fastest
# measured: 2.49 ms); long sequences cut into segments until there are LINEAR_TARGET_PROGRAMS
# programs (about two waves of 132 SMs at one program per SM: 8192-token segments at 64k, the
# fastest measured), never shorter than LINEAR_MIN_SEGMENT_CHUNKS chunks (a shorter segment
# spends more on its scan than it saves).
LINEAR_CHUNK = 64
LINEAR_STATE_COLUMNS = 64
LINEAR_WARPS = 4
LINEAR_STAGES = 3
LINEAR_BACKWARD_STAGES = 2
LINEAR_TARGET_PROGRAMS = 256
LINEAR_MIN_SEGMENT_CHUNKS = 4
LINEAR_STATE_BYTES = 4  # states between launches (segment starts, final state, its gradient) are fp32


def next_power_of_two(value: int) -> int:
    """Smallest power of two >= value (Triton's aranges must be powers of two)."""
    return 1 << max(0, (int(value) - 1).bit_length())


def padded_head_dim(head_dim: int) -> int:
    """A head dim as the kernels tile it: the next power of two (tl.arange), at least 16."""
    return max(MIN_TILE_DIM, next_power_of_two(head_dim))


def attention_shared_memory(block_m: int, block_n: int, num_stages: int, head_dim: int,
                            value_dim: int, dtype_bytes: int) -> int:
    """Shared memory of a fused attention program as Triton pipelines it: the Q tile (block_m x
    D) plus num_stages K and V tiles in flight (the software pipeline's ring), and the barriers.
    Head dims are padded as the kernels pad them. E.g. 230400 bytes for 128 x 128 tiles, D=128,
    3 stages, bf16 (the compiled kernel's figure on an H100)."""
    d, dv = padded_head_dim(head_dim), padded_head_dim(value_dim)
    return dtype_bytes * (block_m * d + max(1, num_stages) * block_n * (d + dv)) + SHARED_MEMORY_OVERHEAD


def linear_walk_shared_memory(chunk: int, block_c: int, num_stages: int, a_dim: int, c_dim: int,
                              dtype_bytes: int) -> int:
    """Shared memory of one chunked linear-attention walk: the pipeliner's ring of num_stages
    copies of the A, B (chunk x D) and C (chunk x BLOCK_C) chunk tiles, plus the state staged as
    a tensor-core operand (D x BLOCK_C); BLOCK_C no wider than the padded C dim. Equal to what
    Triton allocates for sm_90 (benchmarks/compile_linear.py: 98304 bytes at CHUNK=64,
    BLOCK_C=64, D=128, 2 stages)."""
    d = padded_head_dim(a_dim)
    block_c = min(block_c, padded_head_dim(c_dim))
    return dtype_bytes * (max(1, num_stages) * chunk * (2 * d + block_c) + d * block_c)


def linear_default_segment(batch: int, q_heads: int, q_len: int, chunk: int, block_c: int,
                           columns: int) -> int:
    """Tokens per segment of the default walk: 0 (one walk) when the (batch, head, column block)
    programs alone reach LINEAR_TARGET_PROGRAMS, else the longest power-of-two number of chunks
    that does, never below LINEAR_MIN_SEGMENT_CHUNKS chunks."""
    programs = batch * q_heads * -(-columns // block_c)
    if programs >= LINEAR_TARGET_PROGRAMS:
        return 0
    chunks = -(-q_len // chunk)
    wanted_segments = -(-LINEAR_TARGET_PROGRAMS // programs)
    per_segment = max(LINEAR_MIN_SEGMENT_CHUNKS, chunks // wanted_segments)
    per_segment = 1 << (per_segment.bit_length() - 1)  # rounded down: at least the wanted segments
    return 0 if per_segment >= chunks else per_segment * chunk
