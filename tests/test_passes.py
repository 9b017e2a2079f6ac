"""Pass analysis: the paper's definition as an algorithm over the dependency graph gives the
expected pass counts and names what must stay live between passes."""

import pytest

from einsim.einsum_cascades import analyze_passes, library_names, load_cascade, parse_cascade
from einsim.errors import SpecError

EXPECTED_PASSES = {
    "attention-3pass": 3, "flat": 3, "attention-2pass": 2, "attention-1pass": 1, "fusemax": 1,
    "attention-causal": 1, "attention-window": 1, "gqa": 1, "linear-attention": 1, "decode-splitkv": 2,
    "gemm": 1, "linear-attention-recurrent": 1, "linear-attention-identity": 1,
    "linear-attention-identity-recurrent": 1, "linear-attention-decay-recurrent": 1,
    "softcap": 1, "alibi": 1, "sinks-window": 1, "packed-documents": 1, "prefix-lm": 1, "block-sparse": 1,
    "relative-bias": 1, "natten-2d": 1, "linear-attention-decay": 1,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PASSES))
def test_library_cascade_needs_the_expected_passes(name):
    assert analyze_passes(load_cascade(name)).passes == EXPECTED_PASSES[name]


def test_every_cascade_with_an_m_rank_is_covered():
    assert {n for n in library_names() if "M" in load_cascade(n).ranks} == set(EXPECTED_PASSES)


def test_3pass_einsums_fall_in_the_papers_passes():
    report = analyze_passes(load_cascade("attention-3pass"))
    assert report.einsum_pass == {"QK": 1, "GM": 1, "SN": 2, "SD": 2, "A": 3, "AV": 3}
    live = {t.tensor: t for t in report.live_across_passes}
    assert live["QK"].elements == "B*H*M*P" and live["QK"].grows_with_rank
    assert live["GM"].elements == "B*H*P" and not live["GM"].grows_with_rank


def test_fusemax_needs_one_pass_and_nothing_live_between_passes():
    report = analyze_passes(load_cascade("fusemax"))
    assert report.passes == 1 and report.live_across_passes == []
    assert report.iterates_rank["RNV"] and not report.iterates_rank["AV"]


def test_2pass_keeps_per_tile_statistics_that_grow_with_m():
    report = analyze_passes(load_cascade("attention-2pass"))
    assert report.einsum_pass["GM"] == 1 and report.einsum_pass["C"] == 2
    live = {t.tensor: t for t in report.live_across_passes}
    assert live["SLNV"].elements == "B*H*M1*F*P" and live["SLNV"].grows_with_rank


def test_decode_splitkv_is_one_pass_per_chunk_and_two_with_the_merge():
    report = analyze_passes(load_cascade("decode-splitkv"))
    assert report.passes == 2 and report.passes_within == {"MT": 1}
    assert analyze_passes(load_cascade("decode-splitkv"), rank="MT").passes == 1
    assert report.einsum_pass["RNV"] == 1 and report.einsum_pass["CF"] == 2
    live = {t.tensor: t for t in report.live_across_passes}
    # only each chunk's final state crosses into the merge: MC values per row, not M
    assert live["RNV"].elements == "B*H*MC*F*P" and not live["RNV"].grows_with_rank


def test_flat_fuses_rows_but_keeps_three_passes_over_m():
    report = analyze_passes(load_cascade("flat"))
    assert report.passes == 3
    assert {t.tensor: t.elements for t in report.live_across_passes}["QK"] == "B*H*M*P"


def test_a_new_cascade_is_analysed_not_looked_up():
    # normalising by a mean and then a variance: two full reductions, three passes
    cascade = parse_cascade("""
name: layernorm-over-m
ranks: {M: 8, P: 2}
inputs: {X: [M, P]}
einsums:
  - MU[p] = X[m,p]
  - D[m,p] = X[m,p] - MU[p]
  - VAR[p] = D[m,p] * D[m,p]
  - Y[m,p] = D[m,p] / VAR[p]
outputs: [Y]
""")
    assert analyze_passes(cascade).einsum_pass == {"MU": 1, "D": 2, "VAR": 2, "Y": 3}
    assert analyze_passes(cascade, rank="P").passes == 1


def test_reading_a_final_running_state_while_iterating_m_again_is_a_new_pass():
    text = load_cascade("fusemax").source
    with open(text) as handle:
        yaml_text = handle.read()
    yaml_text = yaml_text.replace("outputs: [AV]", "  - Z[b,h,m1,m0,p] = QK[b,h,m1,m0,p] - RM[b,h,M1,p]\noutputs: [AV, Z]")
    report = analyze_passes(parse_cascade(yaml_text))
    assert report.passes == 2 and report.einsum_pass["Z"] == 2
    assert {t.tensor for t in report.live_across_passes} == {"QK", "RM"}


def test_json_has_the_documented_keys():
    data = analyze_passes(load_cascade("attention-3pass")).to_json()
    assert {"cascade", "rank", "passes", "einsum_pass", "live_across_passes"} <= set(data)
    assert {"tensor", "elements"} <= set(data["live_across_passes"][0])


def test_unknown_rank_is_rejected():
    with pytest.raises(SpecError, match="unknown rank 'Q'"):
        analyze_passes(load_cascade("fusemax"), rank="Q")
