"""The float64 executor computes what the oracle computes, for every attention cascade in the
library, over many shapes: tails (M not a multiple of the tile), tiles of one, empty rows."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsim.einsum_cascades import attention_reference, execute, load_cascade
from einsim.einsum_cascades.reference import linear_attention_reference
from einsim.errors import ShapeError

TOLERANCE = 1e-10
FAST = settings(max_examples=20, deadline=None)


def to_cascade(x):
    """[B, H, N, D] (the oracle's layout) -> [B, H, D, N] (the cascades' Q[b,h,e,p])."""
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2))


@st.composite
def problems(draw, gqa=False):
    kv_heads = draw(st.integers(1, 2))
    heads = kv_heads * draw(st.integers(1, 3)) if gqa else kv_heads
    batch = draw(st.integers(1, 2))
    head_dim, v_head_dim = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kv_len, q_len = draw(st.integers(1, 19)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, heads, q_len, head_dim)) * 2
    k = rng.standard_normal((batch, kv_heads, kv_len, head_dim))
    v = rng.standard_normal((batch, kv_heads, kv_len, v_head_dim))
    return q, k, v


def run(name, q, k, v, **sizes):
    out = execute(load_cascade(name), {"Q": to_cascade(q), "K": to_cascade(k), "V": to_cascade(v)}, sizes)
    return out["AV"].transpose(0, 1, 3, 2)


@pytest.mark.parametrize("name", ["attention-3pass", "attention-2pass", "attention-1pass", "fusemax", "flat"])
@FAST
@given(problem=problems(), block=st.integers(1, 8))
def test_every_softmax_cascade_equals_attention(name, problem, block):
    q, k, v = problem
    expected, _ = attention_reference(q, k, v, scale=1.0)
    got = run(name, q, k, v, block_m=block, block_p=block)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@FAST
@given(problem=problems(), block=st.integers(1, 6), splits=st.integers(1, 5))
def test_decode_splitkv_equals_attention(problem, block, splits):
    q, k, v = problem
    expected, _ = attention_reference(q, k, v, scale=1.0)
    got = run("decode-splitkv", q, k, v, block_m=block, num_splits=splits)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@FAST
@given(problem=problems(), block=st.integers(1, 8))
def test_causal_cascade_equals_causal_attention(problem, block):
    q, k, v = problem  # q_len > kv_len gives rows that see no key: both return 0
    expected, _ = attention_reference(q, k, v, scale=1.0, causal=True)
    np.testing.assert_allclose(run("attention-causal", q, k, v, block_m=block), expected, rtol=0, atol=TOLERANCE)


@FAST
@given(problem=problems(), block=st.integers(1, 8), left=st.integers(0, 6), right=st.integers(0, 6))
def test_window_cascade_equals_window_attention(problem, block, left, right):
    q, k, v = problem
    expected, _ = attention_reference(q, k, v, scale=1.0, window=(left, right))
    got = run("attention-window", q, k, v, block_m=block, window_left=left, window_right=right)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@FAST
@given(problem=problems(gqa=True), block=st.integers(1, 8))
def test_gqa_cascade_equals_grouped_attention(problem, block):
    q, k, v = problem
    expected, _ = attention_reference(q, k, v, scale=1.0)
    np.testing.assert_allclose(run("gqa", q, k, v, block_m=block), expected, rtol=0, atol=TOLERANCE)


@FAST
@given(
    length=st.integers(1, 17), block=st.integers(1, 6), head_dim=st.integers(1, 4),
    v_head_dim=st.integers(1, 4), seed=st.integers(0, 2**31),
)
def test_linear_attention_cascade_equals_its_reference(length, block, head_dim, v_head_dim, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 1, 2, length, head_dim))
    v = rng.standard_normal((1, 2, length, v_head_dim))
    out = execute(load_cascade("linear-attention"), {"Q": to_cascade(q), "K": to_cascade(k), "V": to_cascade(v)},
                  {"block": block})
    expected, _ = linear_attention_reference(q, k, v)
    np.testing.assert_allclose(out["O"].transpose(0, 1, 3, 2), expected, rtol=0, atol=TOLERANCE)


def test_ffn_computes_gelu_mlp():
    rng = np.random.default_rng(1)
    x, w1, w2 = rng.standard_normal((2, 5, 3)), rng.standard_normal((5, 7)), rng.standard_normal((7, 5))
    out = execute(load_cascade("ffn"), {"X": x, "W1": w1, "W2": w2})["Y"]
    from scipy.special import erf

    hidden = np.einsum("bdp,ds->bsp", x, w1)
    expected = np.einsum("bsp,sd->bdp", 0.5 * hidden * (1 + erf(hidden / np.sqrt(2))), w2)
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOLERANCE)


def test_running_state_keeps_every_step():
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((3, 1, 1, 10, 2))
    out = execute(load_cascade("fusemax"), {"Q": to_cascade(q), "K": to_cascade(k), "V": to_cascade(v)},
                  {"block_m": 4}, intermediates=True)
    assert out["RM"].shape == (1, 1, 4, 10)  # M1 + 1 = 4 states
    assert np.all(np.isneginf(out["RM"][:, :, 0]))
    scores = np.einsum("pe,me->pm", q[0, 0], k[0, 0])
    np.testing.assert_allclose(out["RM"][0, 0, -1], scores.max(axis=1), rtol=0, atol=TOLERANCE)


def test_wrong_input_shape_is_named():
    cascade = load_cascade("fusemax")
    q = np.zeros((1, 1, 4, 3))
    with pytest.raises(ShapeError, match="rank E is 4 in one input and 5 in K"):
        execute(cascade, {"Q": q, "K": np.zeros((1, 1, 5, 3)), "V": np.zeros((1, 1, 4, 3))})
    with pytest.raises(ShapeError, match="missing input V"):
        execute(cascade, {"Q": q, "K": np.zeros((1, 1, 4, 3))})
