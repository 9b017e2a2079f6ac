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


FEATURE_MAPS = (None, "elu1")


def _check_linear_shapes(q_shape, k_shape, v_shape, decay_shape, state_shape) -> int:
    """The query-head group size of linear attention's inputs, or a ShapeError."""
    if len(q_shape) != 4 or len(k_shape) != 4 or len(v_shape) != 4:
        raise ShapeError(f"linear attention needs 4-D q, k, v [B, H, N, D]; got {q_shape}, {k_shape}, {v_shape}")
    batch, q_heads, length, head_dim = q_shape
    if tuple(k_shape[:3]) != tuple(v_shape[:3]) or k_shape[0] != batch or k_shape[2] != length \
            or k_shape[3] != head_dim:
        raise ShapeError(f"linear attention needs q [B, Hq, N, D], k [B, Hkv, N, D], v [B, Hkv, N, Dv]; "
                         f"got {q_shape}, {k_shape}, {v_shape}")
    if q_heads % k_shape[1]:
        raise ShapeError(f"query heads ({q_heads}) must be a multiple of key/value heads ({k_shape[1]})")
    if decay_shape is not None and tuple(decay_shape) != (q_heads,):
        raise ShapeError(f"decay must hold one slope per query head, shape ({q_heads},); got {decay_shape}")
    want_state = (batch, q_heads, head_dim, v_shape[3])
    if state_shape is not None and tuple(state_shape) != want_state:
        raise ShapeError(f"initial_state must be [B, Hq, D, Dv] = {want_state}; got {state_shape}")
    return q_heads // k_shape[1]


def linear_attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, *,
                               feature_map: str | None = "elu1", scale: float = 1.0,
                               decay: np.ndarray | None = None,
                               initial_state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Causal, unnormalised linear attention in float64, the obvious quadratic way:

        out[i] = scale * (sum over j <= i of g^(i-j) (phi(q_i) . phi(k_j)) v_j  +  g^(i+1) phi(q_i) S0)
        state  = g^N S0 + sum over j of g^(N-1-j) phi(k_j)^T v_j

    with phi = elu + 1 (feature_map="elu1") or the identity (None), g = exp(-decay[h]) the
    per-head decay of Lightning Attention / RetNet (decay=None: g = 1), S0 the initial state
    [B, Hq, D, Dv] (None: zeros). The state is that of the recurrence S_i = g S_(i-1) + phi(k_i)^T
    v_i, o_i = scale phi(q_i) S_i, which chunked and recurrent kernels compute the same way.

    Layout [B, Hq, N, D] for q, [B, Hkv, N, D] for k and [B, Hkv, N, Dv] for v (self-attention:
    one length N; query head h reads key/value head h // (Hq // Hkv)). Returns
    (out [B, Hq, N, Dv], final state [B, Hq, D, Dv]).
    """
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    if feature_map not in FEATURE_MAPS:
        raise ShapeError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    group = _check_linear_shapes(q.shape, k.shape, v.shape, None if decay is None else np.shape(decay),
                                 None if initial_state is None else np.shape(initial_state))
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    if feature_map == "elu1":
        q, k = elu_feature_map(q), elu_feature_map(k)
    length = q.shape[2]
    position = np.arange(length)
    distance = position[:, None] - position[None, :]
    slopes = np.zeros(q.shape[1]) if decay is None else np.asarray(decay, dtype=np.float64)
    # g^(i-j) on the causal triangle, per head: [H, N, N]
    weights = np.where(distance >= 0, np.exp(-slopes[:, None, None] * np.maximum(distance, 0)), 0.0)
    scores = np.einsum("bhpe,bhme->bhpm", q, k) * weights
    out = np.einsum("bhpm,bhmf->bhpf", scores, v)
    tail = np.exp(-slopes[:, None] * (length - 1 - position))  # g^(N-1-j): [H, N]
    state = np.einsum("bhme,bhmf,hm->bhef", k, v, tail)
    if initial_state is not None:
        initial_state = np.asarray(initial_state, dtype=np.float64)
        lead = np.exp(-slopes[:, None] * (position + 1))  # g^(i+1): [H, N]
        out = out + np.einsum("bhpe,bhef,hp->bhpf", q, initial_state, lead)
        state = state + initial_state * np.exp(-slopes * length)[None, :, None, None]
    return scale * out, state


def linear_attention_reference_torch(q, k, v, *, feature_map: str | None = "elu1", scale: float = 1.0,
                                     decay=None, initial_state=None, dtype=None):
    """`linear_attention_reference`'s formula on torch tensors: differentiable (in q, k, v and the
    initial state), on the inputs' device, in `dtype` (default float64 on the CPU, float32
    elsewhere). Returns (out, final state) with the oracle's layout and conventions;
    tests/test_reference.py checks it equals linear_attention_reference."""
    import torch

    if feature_map not in FEATURE_MAPS:
        raise ShapeError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    group = _check_linear_shapes(tuple(q.shape), tuple(k.shape), tuple(v.shape),
                                 None if decay is None else tuple(decay.shape),
                                 None if initial_state is None else tuple(initial_state.shape))
    compute = dtype or (torch.float64 if q.device.type == "cpu" else torch.float32)
    q = q.to(compute)
    k = k.to(compute).repeat_interleave(group, 1)
    v = v.to(compute).repeat_interleave(group, 1)
    if feature_map == "elu1":
        q, k = torch.nn.functional.elu(q) + 1.0, torch.nn.functional.elu(k) + 1.0
    length = q.shape[2]
    position = torch.arange(length, device=q.device, dtype=compute)
    distance = position[:, None] - position[None, :]
    slopes = (torch.zeros(q.shape[1], device=q.device, dtype=compute) if decay is None
              else decay.to(device=q.device, dtype=compute))
    weights = torch.where(distance >= 0, torch.exp(-slopes[:, None, None] * distance.clamp_min(0)),
                          torch.zeros((), device=q.device, dtype=compute))
    out = ((q @ k.transpose(-1, -2)) * weights) @ v
    tail = torch.exp(-slopes[:, None] * (length - 1 - position))
    state = (k * tail[None, :, :, None]).transpose(-1, -2) @ v
    if initial_state is not None:
        initial_state = initial_state.to(compute)
        lead = torch.exp(-slopes[:, None] * (position + 1))
        out = out + (q * lead[None, :, :, None]) @ initial_state
        state = state + initial_state * torch.exp(-slopes * length)[None, :, None, None]
    return scale * out, state


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
