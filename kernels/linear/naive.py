"""Linear attention token by token, the recurrent form, in plain torch: short and obviously
correct, the twin the decode kernel is checked against and a second formulation beside the
oracle's quadratic one (einsum_cascades.reference.linear_attention_reference; the tests prove the
two equal).

    S_i = g S_(i-1) + phi(k_i)^T v_i        (S_(-1) = the initial state, g = exp(-decay[h]))
    o_i = scale * phi(q_i) S_i
"""

from __future__ import annotations


def recurrent_linear_attention(q, k, v, *, feature_map: str | None = None, scale: float | None = None,
                               decay=None, initial_state=None, dtype=None):
    """q [B, Hq, N, D], k [B, Hkv, N, D], v [B, Hkv, N, Dv] (query head h reads key/value head
    h // (Hq // Hkv)); decay [Hq] slopes >= 0 or None; initial_state [B, Hq, D, Dv] or None.
    Computes in `dtype` (default float64 on the CPU, float32 elsewhere). Returns
    (out [B, Hq, N, Dv], final state [B, Hq, D, Dv]), both in `dtype`."""
    import torch

    compute = dtype or (torch.float64 if q.device.type == "cpu" else torch.float32)
    batch, q_heads, length, head_dim = q.shape
    group = q_heads // k.shape[1]
    scale = head_dim ** -0.5 if scale is None else float(scale)
    q = q.to(compute)
    k = k.to(compute).repeat_interleave(group, 1)
    v = v.to(compute).repeat_interleave(group, 1)
    if feature_map == "elu1":
        q, k = torch.nn.functional.elu(q) + 1.0, torch.nn.functional.elu(k) + 1.0
    elif feature_map is not None:
        raise ValueError(f"feature_map must be None or 'elu1', got {feature_map!r}")
    gamma = (torch.ones(q_heads, dtype=compute, device=q.device) if decay is None
             else torch.exp(-decay.to(device=q.device, dtype=compute)))[None, :, None, None]
    state = (torch.zeros(batch, q_heads, head_dim, v.shape[-1], dtype=compute, device=q.device)
             if initial_state is None else initial_state.to(compute))
    outs = []
    for i in range(length):
        state = gamma * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        outs.append(scale * (q[:, :, i, None, :] @ state)[:, :, 0])
    out = torch.stack(outs, 2) if outs else q.new_zeros(batch, q_heads, 0, v.shape[-1])
    return out, state
