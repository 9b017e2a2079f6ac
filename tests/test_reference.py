"""The torch twin of the float64 oracle computes the same function, so kernels' gradient tests
and GPU checks that use it are checked against the oracle itself."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from einsim.einsum_cascades.reference import attention_reference, attention_reference_torch  # noqa: E402


@pytest.mark.parametrize("q_len, kv_len, causal, window, group", [
    (17, 17, False, None, 1),
    (5, 33, True, None, 4),
    (40, 9, True, None, 2),  # more queries than keys: rows that see no key
    (30, 30, False, (3, 2), 1),
])
@pytest.mark.parametrize("max_score_bytes", [1 << 30, 1])  # one block, then one query row a block
def test_torch_reference_equals_the_oracle(q_len, kv_len, causal, window, group, max_score_bytes):
    rng = np.random.default_rng(q_len * 31 + kv_len)
    q = rng.standard_normal((2, 2 * group, q_len, 24))
    k = rng.standard_normal((2, 2, kv_len, 24))
    v = rng.standard_normal((2, 2, kv_len, 40))
    want_out, want_lse = attention_reference(q, k, v, scale=0.3, causal=causal, window=window)
    got_out, got_lse = attention_reference_torch(*(torch.from_numpy(t) for t in (q, k, v)), scale=0.3,
                                                 causal=causal, window=window,
                                                 max_score_bytes=max_score_bytes)
    assert got_out.dtype == torch.float64
    np.testing.assert_allclose(got_out.numpy(), want_out, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.isinf(got_lse.numpy()), np.isinf(want_lse))
    finite = np.isfinite(want_lse)
    np.testing.assert_allclose(got_lse.numpy()[finite], want_lse[finite], rtol=0, atol=1e-12)


def test_torch_reference_gradients_are_finite_on_rows_that_see_no_key():
    q, k, v = (torch.randn(1, 2, n, 8, dtype=torch.float64, requires_grad=True) for n in (6, 3, 3))
    out, _ = attention_reference_torch(q, k, v, causal=True)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)
