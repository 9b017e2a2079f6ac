"""Triton helpers the fused forward and the backward share: loading and storing one tile of a
[B, H, N, D] tensor (through a tensor descriptor, i.e. TMA, or masked pointers for any strides),
the visibility mask, and the key (or query) range a tile must visit, split into the masked
edges and the unmasked middle so that only edge tiles pay for masking."""

from __future__ import annotations

import triton
import triton.language as tl

LOG2_E = 1.4426950408889634
LN_2 = 0.6931471805599453


@triton.jit
def load_tile(X, batch, head, start, rows_total, cols_total, stride_b, stride_h, stride_n,
              stride_d, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, USE_TMA: tl.constexpr):
    """Rows [start, start + BLOCK) and columns [0, BLOCK_D) of X[batch, head]; zero outside."""
    if USE_TMA:
        # The descriptor's shape is the tensor's: TMA fills rows and columns past it with zeros.
        tile = X.load([batch, head, start, 0]).reshape([BLOCK, BLOCK_D])
    else:
        rows = start + tl.arange(0, BLOCK)
        cols = tl.arange(0, BLOCK_D)
        base = X + batch.to(tl.int64) * stride_b + head.to(tl.int64) * stride_h
        mask = (rows[:, None] < rows_total) & (cols[None, :] < cols_total)
        tile = tl.load(base + rows[:, None] * stride_n + cols[None, :] * stride_d, mask=mask,
                       other=0.0)
    return tile


@triton.jit
def store_tile(X, tile, batch, head, start, rows_total, cols_total, stride_b, stride_h, stride_n,
               stride_d, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, USE_TMA: tl.constexpr):
    """Store rows [start, start + BLOCK) of X[batch, head]; rows/columns past the end dropped."""
    if USE_TMA:
        X.store([batch, head, start, 0], tile.reshape([1, 1, BLOCK, BLOCK_D]))
    else:
        rows = start + tl.arange(0, BLOCK)
        cols = tl.arange(0, BLOCK_D)
        base = X + batch.to(tl.int64) * stride_b + head.to(tl.int64) * stride_h
        mask = (rows[:, None] < rows_total) & (cols[None, :] < cols_total)
        tl.store(base + rows[:, None] * stride_n + cols[None, :] * stride_d, tile, mask=mask)


@triton.jit
def visible(rows, cols, q_len, kv_len, window_left, window_right,
            IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """[rows, cols] mask of the keys each query sees (bottom-right aligned, as the reference)."""
    position = rows[:, None] + (kv_len - q_len)
    keep = cols[None, :] < kv_len
    if IS_CAUSAL:
        keep = keep & (cols[None, :] <= position)
    if HAS_WINDOW:
        keep = keep & (cols[None, :] >= position - window_left)
        keep = keep & (cols[None, :] <= position + window_right)
    return keep


@triton.jit
def key_bounds(start_m, q_len, kv_len, window_left, window_right,
               IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key tiles of the query tile at start_m as three ranges: [lo, mid_lo) masked,
    [mid_lo, mid_hi) unmasked (every key visible to every row), [mid_hi, hi) masked.

    lo is tile-aligned; a range may be empty. Twin of Problem.tile_key_range.
    """
    offset = kv_len - q_len
    last_row = tl.minimum(start_m + BLOCK_M, q_len) - 1
    lo = start_m * 0
    hi = lo + kv_len
    full_lo = lo
    full_hi = hi
    if IS_CAUSAL:
        hi = tl.minimum(hi, last_row + offset + 1)
        full_hi = tl.minimum(full_hi, start_m + offset + 1)
    if HAS_WINDOW:
        lo = tl.maximum(lo, start_m + offset - window_left)
        hi = tl.minimum(hi, last_row + offset + window_right + 1)
        full_lo = tl.maximum(full_lo, last_row + offset - window_left)
        full_hi = tl.minimum(full_hi, start_m + offset + window_right + 1)
    lo = (lo // BLOCK_N) * BLOCK_N
    full_hi = tl.maximum(full_hi, 0)  # Triton's // truncates toward zero
    mid_lo = tl.maximum(((full_lo + BLOCK_N - 1) // BLOCK_N) * BLOCK_N, lo)
    mid_hi = (full_hi // BLOCK_N) * BLOCK_N
    none_full = mid_hi <= mid_lo
    mid_lo = tl.where(none_full, tl.maximum(hi, lo), mid_lo)
    mid_hi = tl.where(none_full, tl.maximum(hi, lo), mid_hi)
    return lo, mid_lo, mid_hi, hi


@triton.jit
def query_bounds(start_n, q_len, kv_len, window_left, window_right,
                 IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Query tiles that see the key tile at start_n, as key_bounds: [lo, mid_lo) masked,
    [mid_lo, mid_hi) unmasked, [mid_hi, hi) masked. Query row r sees key j iff
    j - right - offset <= r <= j + left - offset (right = 0 when causal)."""
    offset = kv_len - q_len
    last_key = tl.minimum(start_n + BLOCK_N, kv_len) - 1
    lo = start_n * 0
    hi = lo + q_len
    full_lo = lo
    full_hi = hi
    if IS_CAUSAL:
        lo = tl.maximum(lo, start_n - offset)
        full_lo = tl.maximum(full_lo, last_key - offset)
    if HAS_WINDOW:
        if not IS_CAUSAL:
            lo = tl.maximum(lo, start_n - window_right - offset)
            full_lo = tl.maximum(full_lo, last_key - window_right - offset)
        hi = tl.minimum(hi, last_key + window_left - offset + 1)
        full_hi = tl.minimum(full_hi, start_n + window_left - offset + 1)
    lo = tl.maximum(lo, 0)
    lo = (lo // BLOCK_M) * BLOCK_M
    full_lo = tl.maximum(full_lo, 0)
    full_hi = tl.maximum(full_hi, 0)
    mid_lo = tl.maximum(((full_lo + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, lo)
    mid_hi = (full_hi // BLOCK_M) * BLOCK_M
    none_full = mid_hi <= mid_lo
    mid_lo = tl.where(none_full, tl.maximum(hi, lo), mid_lo)
    mid_hi = tl.where(none_full, tl.maximum(hi, lo), mid_hi)
    return lo, mid_lo, mid_hi, hi


@triton.jit
def visible_t(cols, rows, q_len, kv_len, window_left, window_right,
              IS_CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """visible() transposed: a [cols, rows] mask, for kernels that hold scores as Kᵀ·Q tiles."""
    position = rows[None, :] + (kv_len - q_len)
    keep = (cols[:, None] < kv_len) & (rows[None, :] < q_len)
    if IS_CAUSAL:
        keep = keep & (cols[:, None] <= position)
    if HAS_WINDOW:
        keep = keep & (cols[:, None] >= position - window_left)
        keep = keep & (cols[:, None] <= position + window_right)
    return keep
