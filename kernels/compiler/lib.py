"""The hand-written Triton helpers that generated kernels call (`lib.<name>` in their source):
loading and storing one tile of a [B, H, N, D] tensor (TMA descriptors or masked pointers), the
exponential split between the MUFU and the FMA units, the backward's preprocessing, the cascade
functions Triton lacks or spells differently (tanh, log1p, mod with Python's sign, sigmoid,
...), loading extra inputs as values, and turning bounds into tile ranges."""

from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2_E = 1.4426950408889634

# On the GPU tanh is one MUFU instruction (tanh.approx.f32, max relative error 2^-10.99, below
# bf16's rounding); Triton's CPU interpreter runs no PTX, so there it is computed from exp.
FAST_TANH = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"))


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
def exp2_fma(x):
    """2**x (x <= 0) on the FMA/ALU pipes instead of the MUFU: Cody-Waite range reduction and a
    degree-3 polynomial for 2**f on [0, 1) (relative error < 1e-4, below bf16's and fp16's
    rounding of P). Lets part of the exponentials run beside the MUFU's 16 per clock per SM."""
    x = tl.maximum(x, -127.0)
    j = tl.floor(x)
    f = x - j
    p = 1.0 + f * (0.69512331 + f * (0.22764372 + f * 0.07705975))
    bits = p.to(tl.int32, bitcast=True) + (j.to(tl.int32) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def exp2_split(x, EXP_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """exp2 of a [BLOCK_M, BLOCK_N] score tile with 1/EXP_SPLIT of it on the FMA units (1: all
    on the MUFU). The halves are taken along column bits each thread already holds in the MMA
    accumulator layout (upper/lower half, even/odd column), so no data moves between threads."""
    if EXP_SPLIT == 1:
        p = tl.math.exp2(x)
    else:
        halves = tl.permute(tl.reshape(x, [BLOCK_M, 2, BLOCK_N // 2]), (0, 2, 1))
        low, high = tl.split(halves)
        if EXP_SPLIT == 2:
            p_low = tl.math.exp2(low)
            p_high = exp2_fma(high)
        else:
            even, odd = tl.split(tl.reshape(high, [BLOCK_M, BLOCK_N // 4, 2]))
            p_low = tl.math.exp2(low)
            p_high = tl.reshape(tl.join(tl.math.exp2(even), exp2_fma(odd)),
                                [BLOCK_M, BLOCK_N // 2])
        p = tl.reshape(tl.permute(tl.join(p_low, p_high), (0, 2, 1)), [BLOCK_M, BLOCK_N])
    return p


@triton.jit
def as_value(x):
    """A loaded extra input as the value the cascade sees: floats in fp32, integers as they are."""
    if x.dtype.is_floating():
        return x.to(tl.float32)
    else:
        return x


@triton.jit
def tanh(x):
    if FAST_TANH:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x.to(tl.float32)],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        # 1 - 2 / (e^(2x) + 1): exact limits +-1 when e^(2x) overflows or underflows.
        return 1.0 - 2.0 / (tl.math.exp2(x * (2.0 * LOG2_E)) + 1.0)


@triton.jit
def log1p(x):
    # log(1 + x) loses digits for |x| < 1e-4; the correction term restores them (Goldberg).
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * (x / (u - 1.0)))


@triton.jit
def mod(a, b):
    """a mod b with the sign of b (Python's %, the float64 executor's np.mod)."""
    r = a % b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


@triton.jit
def floor(x):
    if x.dtype.is_floating():
        return tl.floor(x)
    else:
        return x


@triton.jit
def ceil(x):
    if x.dtype.is_floating():
        return tl.ceil(x)
    else:
        return x


@triton.jit
def sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def relu(x):
    return tl.maximum(x, 0.0)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def silu(x):
    return x / (1.0 + tl.exp(-x))


@triton.jit
def gelu(x):
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def elu1(x):
    return tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0)))


@triton.jit
def tile_ranges(lo, hi, full_lo, full_hi, BLOCK: tl.constexpr):
    """Bounds [lo, hi) of what is visited and [full_lo, full_hi) of what needs no mask, as tile
    ranges: [lo, mid_lo) masked, [mid_lo, mid_hi) unmasked, [mid_hi, hi) masked; lo is
    tile-aligned and a range may be empty (the hand-written kernels' key_bounds did the same)."""
    lo = tl.maximum(lo, 0)
    lo = (lo // BLOCK) * BLOCK
    hi = tl.maximum(hi, lo)
    full_lo = tl.maximum(full_lo, 0)
    full_hi = tl.maximum(full_hi, 0)  # Triton's // truncates toward zero
    mid_lo = tl.maximum(((full_lo + BLOCK - 1) // BLOCK) * BLOCK, lo)
    mid_hi = tl.minimum((full_hi // BLOCK) * BLOCK, hi)
    none_full = mid_hi <= mid_lo
    mid_lo = tl.where(none_full, hi, mid_lo)
    mid_hi = tl.where(none_full, hi, mid_hi)
    return lo, mid_lo, mid_hi, hi


@triton.jit
def backward_preprocess(
    Out, DO, Lse, Delta, Lse2,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_gb, stride_gh, stride_gm, stride_gd,
    q_heads, q_len, v_head_dim,
    BLOCK_M: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    """The backward's first launch, per query tile: delta = rowsum(dO * O), and lse in base-2
    units with -inf made +inf, so a row that saw no key gets P = 0 everywhere."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    batch = bh // q_heads
    head = bh % q_heads
    rows = start_m + tl.arange(0, BLOCK_M)
    o = load_tile(Out, batch, head, start_m, q_len, v_head_dim,
                  stride_ob, stride_oh, stride_om, stride_od, BLOCK_M, BLOCK_DV, False)
    do = load_tile(DO, batch, head, start_m, q_len, v_head_dim,
                   stride_gb, stride_gh, stride_gm, stride_gd, BLOCK_M, BLOCK_DV, False)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    row_ok = rows < q_len
    offsets = bh.to(tl.int64) * q_len + rows
    lse = tl.load(Lse + offsets, mask=row_ok, other=0.0)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    tl.store(Delta + offsets, delta, mask=row_ok)
    tl.store(Lse2 + offsets, lse2, mask=row_ok)
