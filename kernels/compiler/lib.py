"""The hand-written Triton helpers that generated kernels call (`lib.<name>` in their source):
the cascade functions Triton lacks or spells differently (tanh, log1p, mod with Python's sign,
sigmoid, ...), loading extra inputs as values, and turning bounds into tile ranges."""

from __future__ import annotations

import os

import triton
import triton.language as tl

from einsim.kernels.flash.forward import exp2_split  # noqa: F401  (used by generated kernels)
from einsim.kernels.flash.tiles import LOG2_E, load_tile, store_tile  # noqa: F401

# On the GPU tanh is one MUFU instruction (tanh.approx.f32, max relative error 2^-10.99, below
# bf16's rounding); Triton's CPU interpreter runs no PTX, so there it is computed from exp.
FAST_TANH = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"))


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
    tile-aligned and a range may be empty (the tail of kernels.flash.tiles.key_bounds)."""
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
