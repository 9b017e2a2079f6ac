"""The values of the tensors a cascade's filters read (einsim.filter_inputs, einsum_cascades.filter_values):
arrays by name or statistical descriptions that expand deterministically, part of the Problem."""

import numpy as np
import pytest

from einsim.einsum_cascades import load_cascade, parse_cascade
from einsim.einsum_cascades.filter_values import filter_values
from einsim.errors import ShapeError
from einsim.filter_inputs import BlockDensity, Documents, FilterInputs, parse_description
from einsim.problem import Problem


def _values(name, problem, causal=False):
    cascade = load_cascade(name)
    return filter_values(cascade, cascade.bind(problem.rank_sizes()), problem.filter_inputs, causal=causal)


def test_fixed_documents_are_runs_of_the_mean_length_and_queries_read_their_key_position():
    problem = Problem(batch=2, q_heads=1, q_len=100, kv_len=250, head_dim=8, filter_inputs="documents:64,lengths=fixed")
    values = _values("packed-documents", problem)
    np.testing.assert_array_equal(values["DK"][1], np.arange(250) // 64)
    # bottom-right alignment: query p is key position p + 150
    np.testing.assert_array_equal(values["DQ"], values["DK"][:, 150:])


def test_random_documents_are_deterministic_with_the_stated_mean_length():
    first = Documents(512, seed=3).ids(2, 200_000)
    np.testing.assert_array_equal(first, Documents(512, seed=3).ids(2, 200_000))
    assert not np.array_equal(first, Documents(512, seed=4).ids(2, 200_000))
    documents = first[0, -1] + 1
    assert 200_000 / documents == pytest.approx(512, rel=0.1)
    assert np.all(np.diff(first, axis=1) >= 0) and first[0, 0] == 0


def test_a_block_description_keeps_its_density_among_the_causal_blocks_and_the_diagonal():
    problem = Problem(batch=1, q_heads=3, q_len=1024, kv_len=1024, head_dim=8, causal=True, filter_inputs="blocks:0.25")
    blocks = _values("block-sparse", problem, causal=True)["BLOCKS"]
    assert blocks.shape == (1, 3, 16, 16)  # block_p = block_m = 64
    rows = np.arange(16)
    assert np.all(blocks[..., rows, rows] == 1)  # the diagonal
    assert not np.triu(blocks[0, 0], 1).any()  # nothing above it
    np.testing.assert_array_equal(blocks.sum(-1)[0, 0], np.maximum(1, np.round(0.25 * (rows + 1))))
    assert not np.array_equal(blocks[0, 0], blocks[0, 1])  # heads drawn apart


def test_problem_keeps_its_filter_inputs_through_json_and_arrays_by_digest():
    ids = np.repeat(np.arange(4), 32)[None]
    problem = Problem(batch=1, q_heads=1, q_len=128, kv_len=128, head_dim=8, filter_inputs={"DQ": ids, "DK": ids})
    assert "DQ[1, 128]" in problem.describe()
    again = Problem.from_dict(problem.to_dict())
    assert again == problem and hash(again) == hash(problem)
    with pytest.raises(ShapeError, match="DQ .*not kept"):
        again.filter_inputs.values("DQ")
    described = Problem(batch=1, q_heads=1, q_len=8, kv_len=8, head_dim=8, filter_inputs=BlockDensity(0.5, seed=2))
    assert Problem.from_dict(described.to_dict()) == described
    assert described != Problem(batch=1, q_heads=1, q_len=8, kv_len=8, head_dim=8, filter_inputs="blocks:0.5")


@pytest.mark.parametrize("text, message", [
    ("documents", "expected an .npz file or documents:MEAN"),
    ("documents:0", "mean_length must be a positive integer"),
    ("blocks:1.5", r"density must be a number in \(0, 1\]"),
    ("blocks:0.5,shape=3", "'shape=3' is not one of density, seed, diagonal"),
    ("documents:1k,lengths=normal", "lengths must be one of exponential, fixed"),
])
def test_descriptions_name_their_grammar_on_bad_text(text, message):
    with pytest.raises(ShapeError, match=message):
        parse_description(text)


def test_parse_description_reads_keywords_and_shorthands():
    assert parse_description("documents:1k") == Documents(1000)
    assert parse_description("documents:mean=256,lengths=fixed,seed=2") == Documents(256, "fixed", 2)
    assert parse_description("blocks:density=0.1,diagonal=false") == BlockDensity(0.1, diagonal=False)


def test_a_tensor_no_description_fills_is_named():
    text = """
name: gated
ranks: {B: batch, H: heads, E: head_dim, F: v_head_dim, M: kv_len, P: q_len}
symbols: {batch: 1, heads: 1, head_dim: 8, v_head_dim: 8}
filters: ["GATE[h, p, m] > 0"]
inputs: {Q: [B, H, E, P], K: [B, H, E, M], V: [B, H, F, M], GATE: [H, P, M]}
einsums:
  - QK[b,h,m,p] = Q[b,h,e,p] * K[b,h,e,m]
  - AV[b,h,f,p] = QK[b,h,m,p] * V[b,h,f,m]
outputs: [AV]
"""
    cascade = parse_cascade(text)
    with pytest.raises(ShapeError, match=r"nothing gives the values of GATE \[H, P, M\]"):
        filter_values(cascade, cascade.bind({"q_len": 8, "kv_len": 8}), FilterInputs.of("documents:4"))
    with pytest.raises(ShapeError, match="the filters read GATE"):
        filter_values(cascade, cascade.bind({"q_len": 8, "kv_len": 8}), None)


def test_bad_arrays_are_refused_by_name():
    with pytest.raises(ShapeError, match="DQ holds NaN"):
        FilterInputs({"DQ": np.array([0.0, np.nan])})
    with pytest.raises(ShapeError, match="cannot read it as an .npz"):
        FilterInputs.of("/nonexistent/ids.npz")
