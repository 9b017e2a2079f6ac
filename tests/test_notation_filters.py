"""Extra tensor inputs and filters: inputs over the cascade's ranks read in maps and filters,
filters with or / not / parentheses and tensor reads, block-level filters, exact counts of what
they keep at any size, and named errors."""

import numpy as np
import pytest

from einsim.einsum_cascades import analyze_passes, execute, parse_cascade
from einsim.errors import ShapeError, SpecError

SOFTMAX_1PASS = """
init: {RM: -inf, RD: 0, RNV: 0}
einsums:
  - QK[m1,m0,p]   = Q[e,p] * K[e,m1,m0]
  - LM[m1,p]      = max(m0) QK[m1,m0,p]
  - RM[m1+1,p]    = max(RM[m1,p], LM[m1,p])
  - SLN[m1,m0,p]  = exp(QK[m1,m0,p] - RM[m1+1,p])
  - SLD[m1,p]     = SLN[m1,m0,p]
  - PRM[m1,p]     = exp(RM[m1,p] - RM[m1+1,p])
  - SPD[m1,p]     = PRM[m1,p] * RD[m1,p]
  - RD[m1+1,p]    = SPD[m1,p] + SLD[m1,p]
  - SLNV[m1,f,p]  = SLN[m1,m0,p] * V[f,m1,m0]
  - SPNV[m1,f,p]  = PRM[m1,p] * RNV[m1,f,p]
  - RNV[m1+1,f,p] = SPNV[m1,f,p] + SLNV[m1,f,p]
  - AV[f,p]       = RNV[M1,f,p] / RD[M1,p]
outputs: [AV]
"""


def one_pass(filters: str, inputs: str = "", ranks: str = "E: 2, F: 3, M: 11, P: 7, M0: 3", partitions="M: [M1, M0]"):
    text = (f"name: t\nranks: {{{ranks}}}\npartitions: {{{partitions}}}\n"
            f"inputs: {{Q: [E, P], K: [E, M], V: [F, M]{', ' + inputs if inputs else ''}}}\n"
            f"filters: [{filters}]\n" + SOFTMAX_1PASS)
    return parse_cascade(text, source="t.yaml")


def masked_attention(q, k, v, visible):
    """softmax over the visible keys of each query row; rows that see nothing give 0."""
    scores = np.where(visible, k.T @ q, -np.inf)  # [M, P]
    top = np.max(scores, axis=0, keepdims=True)
    weights = np.where(visible, np.exp(scores - np.where(np.isfinite(top), top, 0)), 0)
    total = weights.sum(axis=0, keepdims=True)
    return (v @ weights) / np.where(total == 0, 1, total) * (total != 0)


def qkv(seed, e=2, f=3, m=11, p=7):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((e, p)), rng.standard_normal((e, m)), rng.standard_normal((f, m))


@pytest.mark.parametrize(
    "text, visible",
    [
        ('"m < 2 or m >= p + M - P - 2"', lambda m, p: (m < 2) | (m >= p + 4 - 2)),
        ('"not (m > p + M - P) and (m == 0 or mod(m, 3) != 1)"', lambda m, p: ~(m > p + 4) & ((m == 0) | (m % 3 != 1))),
        ('"floor(m / 4) == floor((p + M - P) / 4)"', lambda m, p: m // 4 == (p + 4) // 4),
    ],
)
def test_filters_with_or_not_and_functions_mask_the_softmax(text, visible):
    q, k, v = qkv(1)
    out = execute(one_pass(text), {"Q": q, "K": k, "V": v})["AV"]
    m, p = np.arange(11)[:, None], np.arange(7)[None, :]
    np.testing.assert_allclose(out, masked_attention(q, k, v, visible(m, p)), rtol=0, atol=1e-12)


def test_a_filter_comparing_tensor_reads_packs_documents():
    q, k, v = qkv(2)
    dq, dk = np.array([0, 0, 1, 1, 1, 2, 2.0]), np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2.0])
    cascade = one_pass('"DQ[p] == DK[m]"', "DQ: [P], DK: [M]")
    out = execute(cascade, {"Q": q, "K": k, "V": v, "DQ": dq, "DK": dk})["AV"]
    np.testing.assert_allclose(out, masked_attention(q, k, v, dk[:, None] == dq[None, :]), rtol=0, atol=1e-12)
    qk = cascade.einsum("QK")
    assert qk.filters[0].tensors == ("DQ", "DK") and set(qk.filters[0].ranks) == {"P", "M"}
    sizes = cascade.bind({})
    assert qk.iteration_points(sizes, {"DQ": dq, "DK": dk}) == 2 * int((dk[:, None] == dq[None, :]).sum())
    with pytest.raises(ShapeError, match=r"reads DQ, DK: how many points it keeps depends on their values"):
        qk.iteration_points(sizes)


def test_a_block_level_filter_skips_whole_tiles_and_carries_the_running_state():
    # BLOCKS[p1, m1]: a block mask over query tiles of 2 and key tiles of 3 (MInference style);
    # it also applies to the running-state updates (they iterate m1 and p), which keep the state
    q, k, v = qkv(3)
    blocks = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 1], [0, 1, 1, 1.0]])  # [P1=4, M1=4]
    cascade = one_pass('"BLOCKS[p1,m1] != 0"', "BLOCKS: [P1, M1]", ranks="E: 2, F: 3, M: 11, P: 7, M0: 3, P0: 2",
                       partitions="M: [M1, M0], P: [P1, P0]")
    assert [f.text for f in cascade.einsum("RD").filters] == ["BLOCKS[p1,m1] != 0"]
    out = execute(cascade, {"Q": q, "K": k, "V": v, "BLOCKS": blocks})["AV"]
    m, p = np.arange(11)[:, None], np.arange(7)[None, :]
    visible = blocks[p // 2, m // 3] != 0
    np.testing.assert_allclose(out, masked_attention(q, k, v, visible), rtol=0, atol=1e-12)
    assert np.all(out[:, 2:4] == 0)  # query tile 1 sees no block


def test_a_block_mask_for_other_tiles_is_named():
    q, k, v = qkv(3)
    text = ("name: t\nranks: {E: 2, F: 3, M: 11, P: 7, M0: block_m, P0: 2}\nsymbols: {block_m: 3}\n"
            "partitions: {M: [M1, M0], P: [P1, P0]}\ninputs: {Q: [E, P], K: [E, M], V: [F, M], BLOCKS: [P1, M1]}\n"
            'filters: ["BLOCKS[p1,m1] != 0"]\n' + SOFTMAX_1PASS)
    cascade = parse_cascade(text, source="t.yaml")
    with pytest.raises(ShapeError, match=r"BLOCKS has M1 = 5 along its M1 axis, but M1 = ceil\(M/M0\) = 4 .*block_m"):
        execute(cascade, {"Q": q, "K": k, "V": v, "BLOCKS": np.ones((4, 5))})
    with pytest.raises(ShapeError, match=r"BLOCKS has P1 = 3 along its P1 axis, but P1 = ceil\(P/P0\) = 4 for these sizes; make BLOCKS match$"):
        execute(cascade, {"Q": q, "K": k, "V": v, "BLOCKS": np.ones((3, 4))})
    with pytest.raises(ShapeError, match=r"sizes give P = 7 but the inputs have 6"):
        execute(cascade, {"Q": q[:, :6], "K": k, "V": v, "BLOCKS": np.ones((4, 4))}, {"P": 7})


def test_an_extra_input_in_a_map_is_read_at_the_points_coordinates():
    # ALiBi-style: a per-head slope times the distance, H heads
    text = """name: t
ranks: {H: 3, E: 2, M: 6, P: 4}
inputs: {Q: [H, E, P], K: [H, E, M], SLOPE: [H]}
einsums:
  - QK[h,m,p] = Q[h,e,p] * K[h,e,m]
  - S[h,m,p]  = QK[h,m,p] - SLOPE[h] * (p + M - P - m)
outputs: [S]
"""
    rng = np.random.default_rng(4)
    q, k, slope = rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 6)), rng.random(3)
    out = execute(parse_cascade(text), {"Q": q, "K": k, "SLOPE": slope})["S"]
    m, p = np.arange(6)[:, None], np.arange(4)[None, :]
    expected = np.einsum("hep,hem->hmp", q, k) - slope[:, None, None] * (p + 2 - m)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    with pytest.raises(ShapeError, match=r"rank H is 3 in one input and 2 in SLOPE"):
        execute(parse_cascade(text), {"Q": q, "K": k, "SLOPE": slope[:2]})


@pytest.mark.parametrize(
    "inputs, filters, message",
    [
        ("X: [P]", '"m <= p"', "inputs.X: no Einsum or filter reads X; read it or remove it"),
        ("", '"QK[m1,m0,p] > 0"', "reads QK, which is not an input; a filter may read input tensors only"),
        ("DQ: [P]", '"DQ[p+1] > 0"', "a filter reads an input at coordinates"),
        ("DQ: [P]", '"DQ[m] > 0"', "position 1 of DQ is rank P"),
        ("", '"e < 1 and f < 1"', "'e < 1 and f < 1' applies to no Einsum: none iterates all of e, f"),
        ("", '"m <= p or"', "t.yaml:5:21: expected a tensor access"),
    ],
)
def test_bad_inputs_and_filters_are_named(inputs, filters, message):
    with pytest.raises(SpecError) as error:
        one_pass(filters, inputs)
    assert message in str(error.value)


def test_inputs_read_by_filters_in_several_passes_are_live_across_them():
    text = """name: t
ranks: {E: 2, F: 2, M: 9, P: 5}
inputs: {Q: [E, P], K: [E, M], V: [F, M], DQ: [P], DK: [M]}
filters: ["DQ[p] == DK[m] or m < 1"]
einsums:
  - QK[m,p] = Q[e,p] * K[e,m]
  - GM[p]   = max(m) QK[m,p]
  - SN[m,p] = exp(QK[m,p] - GM[p])
  - SD[p]   = SN[m,p]
  - A[m,p]  = SN[m,p] / SD[p]
  - AV[f,p] = A[m,p] * V[f,m]
outputs: [AV]
"""
    report = analyze_passes(parse_cascade(text))
    live = {t.tensor: t for t in report.live_across_passes}
    assert report.passes == 3
    assert live["DK"].consumed_in == (2, 3) and live["DK"].grows_with_rank
    assert live["DQ"].elements == "P" and not live["DQ"].grows_with_rank


def test_counts_of_sinks_and_a_window_are_exact_at_long_lengths():
    text = """name: t
ranks: {E: 1, M: 40000, P: 30000}
inputs: {Q: [E, P], K: [E, M]}
filters: ["m < 4 or (m >= p + M - P - 255 and m <= p + M - P)"]
einsums:
  - QK[m,p] = Q[e,p] * K[e,m]
outputs: [QK]
"""
    cascade = parse_cascade(text)
    offset = 40000 - 30000
    p = np.arange(30000)
    window_lo, window_hi = np.maximum(p + offset - 255, 0), p + offset
    expected = int(np.sum(window_hi - window_lo + 1) + np.sum(np.clip(np.minimum(window_lo, 4), 0, None)))
    assert cascade.einsum("QK").iteration_points(cascade.bind({})) == expected


def test_counts_of_packed_documents_are_exact_at_long_lengths():
    text = """name: t
ranks: {B: 2, E: 1, M: 20000, P: 20000}
inputs: {Q: [B, E, P], K: [B, E, M], DQ: [B, P], DK: [B, M]}
filters: ["DQ[b,p] == DK[b,m] and m <= p"]
einsums:
  - QK[b,m,p] = Q[b,e,p] * K[b,e,m]
outputs: [QK]
"""
    cascade = parse_cascade(text)
    rng = np.random.default_rng(5)
    ids = np.sort(rng.integers(0, 25, (2, 20000)), axis=1).astype(float)
    expected = 0
    for row in ids:
        _, lengths = np.unique(row, return_counts=True)
        expected += int(np.sum(lengths * (lengths + 1) // 2))
    assert cascade.einsum("QK").iteration_points(cascade.bind({}), {"DQ": ids, "DK": ids}) == expected

