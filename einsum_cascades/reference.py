"""The float64 attention oracle: softmax(Q·Kᵀ·scale + mask)·V written the obvious way.

Every cascade in the library and every kernel is tested against this one function (directly, or
through the cascade executor, which is itself tested against it). Layout follows torch SDPA:
q is [B, Hq, Nq, D], k is [B, Hkv, Nk, D], v is [B, Hkv, Nk, Dv]; Hq must be a multiple of Hkv
(grouped-query attention: query head h reads key/value head h // (Hq // Hkv)).

Masking semantics (shared by cascades, simulator and kernels; docs/notation.md):
- positions are aligned bottom-right, as in FlashAttention-2: query row i sits at key position
  i + (Nk - Nq), so a decode step (Nq = 1) sees the whole cache;
- causal: key j is visible to query i iff j <= i + (Nk - Nq);
- window=(left, right): key j is visible iff i' - left <= j <= i' + right, with i' = i + Nk - Nq;
  causal sliding-window attention (Mistral) is causal=True, window=(w - 1, 0) or simply (w-1, 0);
- a query row that sees no key returns zeros and a log-sum-exp of -inf.
"""

from __future__ import annotations

import numpy as np

from einsim.errors import ShapeError


def visible_keys(q_len: int, kv_len: int, causal: bool = False,
                 window: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean [q_len, kv_len] mask: True where query i may attend to key j."""
    query_position = np.arange(q_len)[:, None] + (kv_len - q_len)
    key_position = np.arange(kv_len)[None, :]
    mask = np.ones((q_len, kv_len), dtype=bool)
    if causal:
        mask &= key_position <= query_position
    if window is not None:
        left, right = window
        if left < 0 or right < 0:
            raise ShapeError(f"window=(left, right) must be non-negative, got {window}")
        mask &= (key_position >= query_position - left) & (key_position <= query_position + right)
    return mask


def attention_reference(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    scale: float | None = None,
    causal: bool = False,
    window: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact attention in float64. Returns (out [B, Hq, Nq, Dv], lse [B, Hq, Nq]).

    lse is the natural-log log-sum-exp of the scaled, masked scores of each query row, the
    statistic FlashAttention-style kernels return for their backward pass.
    """
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ShapeError(f"q, k, v must be 4-D [B, H, N, D]; got shapes {q.shape}, {k.shape}, {v.shape}")
    batch, q_heads, q_len, head_dim = q.shape
    if k.shape[0] != batch or v.shape[0] != batch or k.shape[2] != v.shape[2] or k.shape[1] != v.shape[1]:
        raise ShapeError(f"k {k.shape} and v {v.shape} must share batch, heads and length with each other and q {q.shape}")
    if k.shape[3] != head_dim:
        raise ShapeError(f"q and k head dims differ: {head_dim} vs {k.shape[3]}")
    kv_heads = k.shape[1]
    if q_heads % kv_heads:
        raise ShapeError(f"query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads})")
    group = q_heads // kv_heads
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scale = 1.0 / np.sqrt(head_dim) if scale is None else float(scale)

    scores = np.einsum("bhpe,bhme->bhpm", q, k) * scale
    mask = visible_keys(q_len, k.shape[2], causal, window)
    scores = np.where(mask, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    safe_max = np.where(np.isfinite(row_max), row_max, 0.0)
    numerator = np.exp(scores - safe_max)
    denominator = numerator.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("bhpm,bhmf->bhpf", numerator, v) / denominator
        lse = (np.log(denominator) + safe_max)[..., 0]
    empty = denominator[..., 0] == 0
    out[empty] = 0.0
    lse[empty] = -np.inf
    return out, lse


def elu_feature_map(x: np.ndarray) -> np.ndarray:
    """phi(x) = elu(x) + 1, the positive feature map of linear attention (Katharopoulos et al.)."""
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def linear_attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal, unnormalised linear attention in float64, the obvious quadratic way:
    out[i] = sum over j <= i of (phi(q_i) . phi(k_j)) v_j, with phi = elu + 1.

    Layout [B, H, N, D] for q and k, [B, H, N, Dv] for v (self-attention: one length N).
    Returns [B, H, N, Dv]. Lightning-style block/recurrent kernels compute the same function.
    """
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    if q.ndim != 4 or q.shape != k.shape or k.shape[:3] != v.shape[:3]:
        raise ShapeError(f"linear attention needs q, k [B, H, N, D] of one shape and v [B, H, N, Dv]; "
                         f"got {q.shape}, {k.shape}, {v.shape}")
    scores = np.einsum("bhpe,bhme->bhpm", elu_feature_map(q), elu_feature_map(k))
    length = q.shape[2]
    scores = np.where(visible_keys(length, length, causal=True), scores, 0.0)
    return np.einsum("bhpm,bhmf->bhpf", scores, v)


def attention_reference_torch(q, k, v, *, scale: float | None = None, causal: bool = False,
                              window: tuple[int, int] | None = None, dtype=None,
                              max_score_bytes: int = 1 << 30):
    """`attention_reference`'s formula on torch tensors: differentiable, on the inputs' device.

    For where the numpy oracle cannot go: gradients by autograd (tests of the backward kernel)
    and GPU-sized checks (benchmarks, autotuning trials). Computes in `dtype` (default float64 on
    the CPU, float32 elsewhere), over blocks of query rows so one block's scores stay under
    `max_score_bytes`. Returns (out, lse) with the oracle's conventions: same layout and GQA,
    bottom-right masks, rows that see no key give 0 and -inf. tests/test_reference.py checks it
    equals attention_reference.
    """
    import torch

    compute = dtype or (torch.float64 if q.device.type == "cpu" else torch.float32)
    batch, q_heads, q_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    if q_heads % kv_heads:
        raise ShapeError(f"query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads})")
    group = q_heads // kv_heads
    keys = k.to(compute).repeat_interleave(group, 1).transpose(-1, -2)
    values = v.to(compute).repeat_interleave(group, 1)
    scale = 1.0 / np.sqrt(head_dim) if scale is None else float(scale)
    mask = torch.from_numpy(visible_keys(q_len, kv_len, causal, window)).to(q.device)
    element_bytes = torch.finfo(compute).bits // 8
    rows = max(1, min(q_len, max_score_bytes // max(1, batch * q_heads * kv_len * element_bytes)))
    outs, lses = [], []
    for start in range(0, q_len, rows):
        block = slice(start, min(q_len, start + rows))
        scores = (q[:, :, block].to(compute) @ keys) * scale
        scores = scores.masked_fill(~mask[block], float("-inf"))
        lses.append(torch.logsumexp(scores, -1))
        # A row that sees no key softmaxes to NaN; the oracle gives it 0.
        outs.append(torch.softmax(scores, -1).nan_to_num(0.0) @ values)
    return torch.cat(outs, 2), torch.cat(lses, 2)
