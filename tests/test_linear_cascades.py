"""The linear-attention cascades: every form (chunked and recurrent; elu1 feature map, identity,
per-head decay) equals the independent float64 formula (einsum_cascades.reference.
linear_attention_reference) on random inputs with tails, so the forms equal each other; each needs
one pass with nothing live between passes; the spatial model's needed buffer does not grow with
the sequence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsim.einsum_cascades import analyze_passes, execute, load_cascade
from einsim.einsum_cascades.reference import linear_attention_reference

# name: (feature map, decay, chunked)
LINEAR_CASCADES = {
    "linear-attention": ("elu1", False, True),
    "linear-attention-recurrent": ("elu1", False, False),
    "linear-attention-identity": (None, False, True),
    "linear-attention-identity-recurrent": (None, False, False),
    "linear-attention-decay": (None, True, True),
    "linear-attention-decay-recurrent": (None, True, False),
}
FAST = settings(max_examples=8, deadline=None)


def run_cascade(name, q, k, v, slopes, block):
    """q, k [B, H, N, E] and v [B, H, N, F] in the oracle's layout; the cascade's O back in it."""
    inputs = {"Q": q.transpose(0, 1, 3, 2), "K": k.transpose(0, 1, 3, 2), "V": v.transpose(0, 1, 3, 2)}
    if LINEAR_CASCADES[name][1]:
        inputs["SLOPE"] = slopes
    sizes = {"block": block} if LINEAR_CASCADES[name][2] else None
    return execute(load_cascade(name), inputs, sizes)["O"].transpose(0, 1, 3, 2)


@pytest.mark.parametrize("name", sorted(LINEAR_CASCADES))
@FAST
@given(length=st.integers(1, 13), block=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_linear_cascade_equals_the_float64_formula(name, length, block, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 2, 3, length, 3))
    v = rng.standard_normal((2, 3, length, 2))
    slopes = rng.uniform(0.0, 1.5, 3)
    feature_map, decay, _ = LINEAR_CASCADES[name]
    want, _ = linear_attention_reference(q, k, v, feature_map=feature_map, decay=slopes if decay else None)
    np.testing.assert_allclose(run_cascade(name, q, k, v, slopes, block), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", sorted(LINEAR_CASCADES))
def test_linear_cascade_needs_one_pass_and_keeps_nothing_live(name):
    report = analyze_passes(load_cascade(name))
    assert report.passes == 1 and report.live_across_passes == []


@pytest.mark.parametrize("name", ["linear-attention-identity", "linear-attention-identity-recurrent"])
def test_spatial_buffer_need_does_not_grow_with_the_sequence(name):
    from einsim.problem import Problem
    from einsim.simulator.simulate import simulate

    needs = []
    for length in (1024, 16384):
        problem = Problem(batch=1, q_heads=4, q_len=length, kv_len=length, head_dim=64, causal=True)
        needs.append(simulate(name, problem, "fusemax-cloud").buffer_needed_bytes)
    state = 64 * 64 * 2  # the E x F state of one head, bf16
    assert needs[0] == needs[1] and needs[0] >= state
