"""Tile classification of filters (tiles.py): every (query tile, key tile) is exactly empty,
partial or full — checked against point-by-point enumeration on random filters (and/or/not,
floor, mod, abs, max, tensor reads) and sizes — with counts, key ranges and Flex-style lists."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsim.einsum_cascades import counting, load_cascade, parse_cascade
from einsim.einsum_cascades.tile_grid import EMPTY, FULL, PARTIAL
from einsim.einsum_cascades.tiles import classify_tiles
from einsim.errors import ShapeError

TERMS = ["m", "p", "p + M - P", "2 * m - p", "floor(m / 3)", "mod(p, 4)", "abs(m - p)", "max(m, p) - 3",
         "floor((m + 1) / 5) * 5", "mod(m - p, 7)", "m1 * 3", "m0 + p", "DQ[p]", "DK[m] * 2"]


@st.composite
def conditions(draw, depth=0):
    if depth < 2 and draw(st.booleans()):
        op = draw(st.sampled_from(["and", "or", "not"]))
        if op == "not":
            return f"not ({draw(conditions(depth + 1))})"
        return f"({draw(conditions(depth + 1))}) {op} ({draw(conditions(depth + 1))})"
    left, right = draw(st.sampled_from(TERMS)), draw(st.sampled_from(TERMS))
    comparison = draw(st.sampled_from(["<=", "<", ">=", ">", "==", "!="]))
    return f"{left} {comparison} {right} + {draw(st.integers(-6, 6))}"


def cascade_with(condition: str, m: int, p: int, block_m: int):
    return parse_cascade(
        f"name: t\nranks: {{E: 1, M: {m}, P: {p}, M0: {block_m}}}\npartitions: {{M: [M1, M0]}}\n"
        f"inputs: {{Q: [E, P], K: [E, M], DQ: [P], DK: [M]}}\nfilters: [{condition!r}, 'DQ[p] + DK[m] > -99']\n"
        "einsums:\n  - QK[m1,m0,p] = Q[e,p] * K[e,m1,m0]\noutputs: [QK]\n")


def brute_force(cascade, sizes, tensors, block_q, block_k):
    """Visible pairs per tile, by evaluating the filters at every (query, key) pair."""
    coords, _ = cascade.space.coordinates({"M": np.arange(sizes["M"])[None, :], "P": np.arange(sizes["P"])[:, None]},
                                          sizes)
    visible = np.ones((sizes["P"], sizes["M"]), dtype=bool)
    for flt in cascade.filters:
        read = lambda access: tensors[access.tensor][tuple(  # noqa: E731
            coords[i.name.upper()] for i in access.indices)]
        visible &= np.broadcast_to(flt.evaluate(coords, sizes, read), visible.shape)
    q_tiles, k_tiles = -(-sizes["P"] // block_q), -(-sizes["M"] // block_k)
    padded = np.zeros((q_tiles * block_q, k_tiles * block_k), dtype=np.int64)
    padded[:sizes["P"], :sizes["M"]] = visible
    return padded.reshape(q_tiles, block_q, k_tiles, block_k).sum(axis=(1, 3))


@settings(max_examples=40, deadline=None)
@given(condition=conditions(), m=st.integers(1, 40), p=st.integers(1, 40), block_m=st.integers(1, 7),
       block_q=st.integers(1, 9), block_k=st.integers(1, 9), seed=st.integers(0, 99))
def test_tiles_are_classified_exactly(condition, m, p, block_m, block_q, block_k, seed):
    cascade = cascade_with(condition, m, p, block_m)
    sizes = cascade.bind({})
    rng = np.random.default_rng(seed)
    tensors = {"DQ": np.sort(rng.integers(0, 5, p)).astype(float), "DK": np.sort(rng.integers(0, 5, m)).astype(float)}
    tiles = classify_tiles(cascade, sizes, block_q, block_k, tensors)
    expected = brute_force(cascade, sizes, tensors, block_q, block_k)
    np.testing.assert_array_equal(tiles.count, expected)
    volume = np.broadcast_to(tiles.volume, tiles.state.shape)
    np.testing.assert_array_equal(tiles.state, np.where(expected == 0, EMPTY, np.where(expected == volume, FULL, PARTIAL)))


@settings(max_examples=15, deadline=None)
@given(condition=conditions(), m=st.integers(1, 40), p=st.integers(1, 40), block=st.integers(1, 7))
def test_counts_of_any_filter_are_exact_through_tiles(condition, m, p, block):
    cascade = cascade_with(condition.replace("DQ[p]", "p").replace("DK[m]", "m"), m, p, block)
    einsum = cascade.einsum("QK")
    sizes = cascade.bind({})
    tensors = {"DQ": np.zeros(p), "DK": np.zeros(m)}
    expected = int(brute_force(cascade, sizes, tensors, 1, 1).sum())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(counting, "_BRUTE_FORCE_POINTS", 0)
        patch.setattr(counting, "choose_tiles", lambda ranks, sizes: {r: block for r in ranks})
        assert einsum.iteration_points(sizes, tensors) == expected


def test_causal_tiles_key_ranges_and_flex_lists():
    tiles = classify_tiles(load_cascade("attention-causal"), {"kv_len": 10, "q_len": 10}, 4, 4)
    assert tiles.batch == ()
    np.testing.assert_array_equal(tiles.state, [[PARTIAL, EMPTY, EMPTY], [FULL, PARTIAL, EMPTY],
                                                 [FULL, FULL, PARTIAL]])
    first, last = tiles.key_ranges()
    np.testing.assert_array_equal(first, [0, 0, 0])
    np.testing.assert_array_equal(last, [1, 2, 3])
    lists = tiles.key_lists()
    np.testing.assert_array_equal(lists["kv_num_blocks"], [1, 1, 1])
    np.testing.assert_array_equal(lists["kv_indices"][:, 0], [0, 1, 2])
    np.testing.assert_array_equal(lists["full_kv_num_blocks"], [0, 1, 2])
    np.testing.assert_array_equal(lists["full_kv_indices"][2, :2], [0, 1])
    first, last = tiles.query_ranges()
    np.testing.assert_array_equal(first, [0, 1, 2])
    np.testing.assert_array_equal(last, [3, 3, 3])
    assert tiles.summary()["visible_pairs"] == 55


def test_sinks_and_window_visit_the_sink_tile_and_the_window_only():
    tiles = classify_tiles(load_cascade("sinks-window"), {"kv_len": 4096, "q_len": 4096, "sinks": 4, "window": 256},
                           128, 128)
    lists = tiles.key_lists()
    visits = lists["kv_num_blocks"] + lists["full_kv_num_blocks"]
    assert visits.max() <= 4  # the sink tile and the (at most) three tiles the window touches
    assert tiles.state[31, 0] == PARTIAL and tiles.state[31, 15] == EMPTY and tiles.state[31, 30] == FULL
    assert tiles.visible_pairs == sum(min(p + 1, 256) + min(4, max(p + 1 - 256, 0)) for p in range(4096))
    counts = tiles.tile_counts()  # what the GPU model walks: the sink tile and the window's, not the gap
    np.testing.assert_array_equal(counts.visited, visits)
    assert counts.first_key[31] == 0 and counts.last_key[31] == 31 * 128 + 127 and counts.exact_pairs == tiles.visible_pairs


def test_tensor_filters_are_classified_from_the_tensors_per_batch_and_head():
    cascade = load_cascade("block-sparse")
    rng = np.random.default_rng(0)
    blocks = (rng.random((2, 3, 4, 5)) < 0.4).astype(float)
    sizes = {"batch": 2, "heads": 3, "q_len": 256, "kv_len": 300, "block_p": 64, "block_m": 64}
    tiles = classify_tiles(cascade, sizes, 64, 64, {"BLOCKS": blocks})
    assert tiles.batch == ("B", "H") and tiles.state.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(tiles.state, np.where(blocks != 0, FULL, EMPTY))
    with pytest.raises(ShapeError, match="the filters read BLOCKS: which tiles they keep depends on their values"):
        classify_tiles(cascade, sizes, 64, 64)


def test_packed_documents_at_16k_are_classified_in_about_a_second():
    ids = np.repeat(np.arange(16), 1024)[None].astype(float).repeat(2, 0)
    tiles = classify_tiles(load_cascade("packed-documents"), {"batch": 2, "kv_len": 16384, "q_len": 16384}, 128, 128,
                           {"DQ": ids, "DK": ids})
    summary = tiles.summary()
    assert summary["partial"] == 2 * 128 and summary["full"] == 2 * 16 * (8 * 7 // 2)
    assert summary["visible_pairs"] == 2 * 16 * 1024 * 1025 // 2


@pytest.mark.parametrize("q_len, kv_len", [(300, 300), (130, 517), (517, 130), (1, 67)])
@pytest.mark.parametrize("mask", ["causal", (40, 0), (17, 9), None])
def test_tile_counts_equal_the_problems_for_causal_and_windows(q_len, kv_len, mask):
    # the GPU model walks Problem.tile_counts for causal/window masks; the classification gives
    # the same TileCounts for them, and the same kind of counts for any other filter
    from einsim.problem import Problem

    if mask == "causal":
        cascade, sizes, problem = load_cascade("attention-causal"), {}, Problem(batch=1, q_heads=1, q_len=q_len, kv_len=kv_len, head_dim=64, causal=True)
    elif mask is None:
        cascade, sizes, problem = load_cascade("fusemax"), {}, Problem(batch=1, q_heads=1, q_len=q_len, kv_len=kv_len, head_dim=64)
    else:
        cascade = load_cascade("attention-window")
        sizes = {"window_left": mask[0], "window_right": mask[1]}
        problem = Problem(batch=1, q_heads=1, q_len=q_len, kv_len=kv_len, head_dim=64, window=mask)
    for block_q, block_k in ((64, 64), (128, 32)):
        got = classify_tiles(cascade, {"q_len": q_len, "kv_len": kv_len, **sizes}, block_q, block_k).tile_counts()
        expected = problem.tile_counts(block_q, block_k)
        for name in ("rows", "visited", "full", "first_key", "last_key"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
        assert (got.exact_pairs, got.kv_lo, got.kv_hi) == (expected.exact_pairs, expected.kv_lo, expected.kv_hi)
        classified = classify_tiles(cascade, {"q_len": q_len, "kv_len": kv_len, **sizes}, block_q, block_k)
        for mine, theirs in zip(classified.key_tile_counts(), problem.key_tile_counts(block_q, block_k)):
            np.testing.assert_array_equal(mine, theirs)
    # the problem's own mask and-ed with the cascade's filters (fusemax has none)
    both = classify_tiles(load_cascade("fusemax"), {"q_len": q_len, "kv_len": kv_len}, 64, 64,
                          problem=Problem(batch=1, q_heads=1, q_len=q_len, kv_len=kv_len, head_dim=64, causal=True))
    np.testing.assert_array_equal(both.tile_counts().visited,
                                  Problem(batch=1, q_heads=1, q_len=q_len, kv_len=kv_len, head_dim=64,
                                          causal=True).tile_counts(64, 64).visited)
