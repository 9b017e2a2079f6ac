"""The online-softmax steps both decode kernels share (split-KV `splitkv.py`, serving `paged.py`):
folding a tile of base-2 scores into the running (max, sum, numerator), folding one split's
partial into another, and normalising into the output and the natural-log lse. One home, so the
-inf handling (rows that see no key) is written once."""

from __future__ import annotations

import triton
import triton.language as tl

LN_2 = tl.constexpr(0.6931471805599453)


@triton.jit
def fold_tile(m_i, l_i, acc, qk, v, DOT_FP32: tl.constexpr):
    """Running max m_i, sum l_i and numerator acc after one tile: qk the tile's scores in base-2
    units (-inf where masked), v its values. A row with no visible key yet keeps m = -inf."""
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(qk - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if DOT_FP32:
        acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return m_new, l_i, acc


@triton.jit
def fold_partial(m, l_sum, acc, pm, pl, pacc):
    """(m, l, acc) combined with another split's partial (pm, pl, pacc), both in base 2."""
    m_new = tl.maximum(m, pm)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    weight = tl.exp2(pm - m_safe)
    return m_new, l_sum * alpha + weight * pl, acc * alpha[:, None] + weight[:, None] * pacc


@triton.jit
def finish(m, l_sum, acc):
    """(out, lse): acc / l, and lse = ln(sum exp) from base-2 (m, l); 0 and -inf for a row that
    saw no key."""
    empty = l_sum == 0.0
    out = acc / tl.where(empty, 1.0, l_sum)[:, None]
    lse = tl.where(empty, float("-inf"),
                   (tl.where(m == float("-inf"), 0.0, m) + tl.log2(tl.where(empty, 1.0, l_sum))) * LN_2)
    return out, lse
