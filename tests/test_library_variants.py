"""The library's attention variants (soft-capping, ALiBi, sinks + window, packed documents,
prefix-LM, block-sparse, relative bias, 2-D neighborhood) each compute their published formula:
the float64 executor against an independent numpy formula written from the paper, on random
inputs at odd sizes, with rows that see no key."""

import numpy as np
import pytest

from einsim.einsum_cascades import analyze_passes, execute, load_cascade

TOLERANCE = 1e-10
VARIANTS = ["softcap", "alibi", "sinks-window", "packed-documents", "prefix-lm", "block-sparse", "relative-bias",
            "natten-2d"]


def softmax_attention(scores, visible, v):
    """[B,H,P,M] scores, [B,H,P,M] visibility, v [B,H,M,F] -> [B,H,P,F]; a row that sees no key
    gives 0."""
    scores = np.where(visible, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    weights = np.where(visible, np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    return np.where(total > 0, (weights @ v) / np.where(total > 0, total, 1.0), 0.0)


def run(name, q, k, v, sizes=None, **extra):
    """q [B,H,P,E], k/v [B,H,M,E|F] in the usual layout; the cascade's layout is [B,H,E,P]."""
    inputs = {"Q": np.swapaxes(q, 2, 3), "K": np.swapaxes(k, 2, 3), "V": np.swapaxes(v, 2, 3), **extra}
    return np.swapaxes(execute(load_cascade(name), inputs, sizes)["AV"], 2, 3)


def problem(seed, batch=2, heads=3, q_len=9, kv_len=13, head_dim=3, v_head_dim=2):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, heads, q_len, head_dim)) * 1.5
    k = rng.standard_normal((batch, heads, kv_len, head_dim))
    v = rng.standard_normal((batch, heads, kv_len, v_head_dim))
    return rng, q, k, v


def positions(q_len, kv_len):
    """Query row p at key position p + M - P (bottom-right), as [P, 1]; keys as [1, M]."""
    return np.arange(q_len)[:, None] + kv_len - q_len, np.arange(kv_len)[None, :]


SHAPES = [(9, 13, 4), (13, 9, 5), (1, 7, 3), (11, 11, 1)]  # (q_len, kv_len, block_m): tails, P > M


@pytest.mark.parametrize("q_len, kv_len, block", SHAPES)
def test_softcap_is_cap_times_tanh_of_the_scores(q_len, kv_len, block):
    _, q, k, v = problem(1, q_len=q_len, kv_len=kv_len)
    q = q * 4  # scores well past the cap
    cap = 2.5
    scores = cap * np.tanh(q @ np.swapaxes(k, 2, 3) / cap)
    expected = softmax_attention(scores, np.ones_like(scores, dtype=bool), v)
    got = run("softcap", q, k, v, {"block_m": block, "softcap": cap})
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("q_len, kv_len, block", SHAPES)
def test_alibi_penalises_the_distance_by_the_heads_slope(q_len, kv_len, block):
    _, q, k, v = problem(2, q_len=q_len, kv_len=kv_len)
    heads = q.shape[1]
    slope = 2.0 ** (-8.0 * np.arange(1, heads + 1) / heads)  # BLOOM's slopes
    query, key = positions(q_len, kv_len)
    scores = q @ np.swapaxes(k, 2, 3) - slope[None, :, None, None] * (query - key)
    visible = np.broadcast_to(key <= query, scores.shape)
    got = run("alibi", q, k, v, {"block_m": block}, SLOPE=slope)
    np.testing.assert_allclose(got, softmax_attention(scores, visible, v), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("q_len, kv_len, block", SHAPES)
@pytest.mark.parametrize("sinks, window", [(2, 3), (0, 4), (3, 1)])
def test_sinks_and_window_see_the_first_keys_and_the_recent_ones(q_len, kv_len, block, sinks, window):
    _, q, k, v = problem(3, q_len=q_len, kv_len=kv_len)
    query, key = positions(q_len, kv_len)
    visible = (key <= query) & ((key < sinks) | (key > query - window))
    scores = q @ np.swapaxes(k, 2, 3)
    got = run("sinks-window", q, k, v, {"block_m": block, "sinks": sinks, "window": window})
    np.testing.assert_allclose(got, softmax_attention(scores, np.broadcast_to(visible, scores.shape), v),
                               rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("length, block", [(13, 4), (10, 3), (1, 2)])
def test_packed_documents_see_only_their_own_document_causally(length, block):
    rng, q, k, v = problem(4, q_len=length, kv_len=length)
    ids = np.sort(rng.integers(0, 4, (2, length)), axis=1).astype(float)  # per batch row
    query, key = positions(length, length)
    visible = (ids[:, None, :, None] == ids[:, None, None, :]) & (key <= query)
    scores = q @ np.swapaxes(k, 2, 3)
    got = run("packed-documents", q, k, v, {"block_m": block}, DQ=ids, DK=ids)
    np.testing.assert_allclose(got, softmax_attention(scores, np.broadcast_to(visible, scores.shape), v),
                               rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("q_len, kv_len, block", SHAPES)
@pytest.mark.parametrize("prefix", [0, 4, 20])
def test_prefix_lm_sees_the_prefix_both_ways_and_the_rest_causally(q_len, kv_len, block, prefix):
    _, q, k, v = problem(5, q_len=q_len, kv_len=kv_len)
    query, key = positions(q_len, kv_len)
    visible = (key < prefix) | (key <= query)
    scores = q @ np.swapaxes(k, 2, 3)
    got = run("prefix-lm", q, k, v, {"block_m": block, "prefix": prefix})
    np.testing.assert_allclose(got, softmax_attention(scores, np.broadcast_to(visible, scores.shape), v),
                               rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("q_len, kv_len, block_p, block_m", [(9, 13, 2, 4), (13, 9, 5, 3), (7, 7, 7, 1)])
def test_block_sparse_computes_only_the_tiles_its_mask_keeps(q_len, kv_len, block_p, block_m):
    rng, q, k, v = problem(6, q_len=q_len, kv_len=kv_len)
    blocks = (rng.random((2, 3, -(-q_len // block_p), -(-kv_len // block_m))) < 0.5).astype(float)
    blocks[0, 0, 0] = 0  # a query tile that sees nothing
    p, m = np.arange(q_len), np.arange(kv_len)
    visible = blocks[:, :, p // block_p][:, :, :, m // block_m] != 0
    scores = q @ np.swapaxes(k, 2, 3)
    got = run("block-sparse", q, k, v, {"block_m": block_m, "block_p": block_p}, BLOCKS=blocks)
    np.testing.assert_allclose(got, softmax_attention(scores, visible, v), rtol=0, atol=TOLERANCE)
    assert np.all(got[0, 0, :block_p] == 0)


@pytest.mark.parametrize("q_len, kv_len, block", SHAPES)
def test_relative_bias_adds_the_heads_bias_to_every_score(q_len, kv_len, block):
    rng, q, k, v = problem(7, q_len=q_len, kv_len=kv_len)
    bias = rng.standard_normal((3, q_len, kv_len)) * 2
    scores = q @ np.swapaxes(k, 2, 3) + bias[None]
    got = run("relative-bias", q, k, v, {"block_m": block}, BIAS=bias)
    np.testing.assert_allclose(got, softmax_attention(scores, np.ones_like(scores, dtype=bool), v),
                               rtol=0, atol=TOLERANCE)


def natten_visible(rows: int, width: int, kernel: int) -> np.ndarray:
    """NATTEN's neighbourhood, written from its definition: query (i, j) sees the keys of the
    kernel x kernel window starting at clamp(i - kernel//2, 0, rows - kernel) (and likewise for
    columns), so every query sees kernel^2 keys."""
    tokens = rows * width
    visible = np.zeros((tokens, tokens), dtype=bool)
    for query in range(tokens):
        i, j = divmod(query, width)
        top = min(max(i - kernel // 2, 0), rows - kernel)
        left = min(max(j - kernel // 2, 0), width - kernel)
        for a in range(top, top + kernel):
            for b in range(left, left + kernel):
                visible[query, a * width + b] = True
    return visible


@pytest.mark.parametrize("rows, width, kernel, block", [(4, 5, 3, 4), (3, 7, 3, 5), (5, 5, 5, 8), (6, 4, 1, 3)])
def test_natten_sees_the_clamped_kernel_window_on_the_image_grid(rows, width, kernel, block):
    tokens = rows * width
    _, q, k, v = problem(8, batch=1, heads=2, q_len=tokens, kv_len=tokens)
    visible = natten_visible(rows, width, kernel)
    assert np.all(visible.sum(axis=1) == kernel * kernel)
    scores = q @ np.swapaxes(k, 2, 3)
    got = run("natten-2d", q, k, v, {"block_m": block, "image_width": width, "kernel": kernel})
    np.testing.assert_allclose(got, softmax_attention(scores, np.broadcast_to(visible, scores.shape), v),
                               rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_runs_in_one_pass_with_nothing_live_between_passes(name):
    report = analyze_passes(load_cascade(name))
    assert report.passes == 1 and report.live_across_passes == []


def test_counts_of_the_variants_follow_their_masks():
    # points of the QK Einsum = visible (query, key) pairs x head_dim, per batch and head
    cascade = load_cascade("natten-2d")
    sizes = cascade.bind({"tokens": 64 * 48, "image_width": 64, "kernel": 7, "head_dim": 1})
    assert cascade.einsum("QK").iteration_points(sizes) == 64 * 48 * 49
    cascade = load_cascade("sinks-window")
    sizes = cascade.bind({"kv_len": 4096, "q_len": 4096, "head_dim": 1})
    visible = sum(min(p + 1, 256) + min(4, max(p + 1 - 256, 0)) for p in range(4096))
    assert cascade.einsum("QK").iteration_points(sizes) == visible
