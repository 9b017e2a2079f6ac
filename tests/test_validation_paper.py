"""The spatial model against the FuseMax paper's evaluation (its artifact's per-point figures):
what we reproduce is pinned here; docs/validation.md explains every difference over 10 %."""

from __future__ import annotations

import statistics

import pytest

from einsim.simulator import paper_runs as runs
from einsim.simulator import paper_validation as pv
from einsim.simulator.models import PAPER_SEQ_LENS
from einsim.simulator.paper_reference import MODELS, attention_points, linear_points, pareto_points
from einsim.simulator.simulate import simulate

POINTS = [(m, n) for m in MODELS for n in PAPER_SEQ_LENS]


@pytest.fixture(scope="module")
def ours():
    return runs.run("cloud")


@pytest.fixture(scope="module")
def paper():
    return attention_points()


def test_the_reference_data_gives_the_papers_headline_numbers(paper):
    linear = linear_points()
    speedup = statistics.fmean(paper[("flat", *k)].latency_s / paper[("fusemax", *k)].latency_s for k in POINTS)
    energy = statistics.fmean(paper[("fusemax", *k)].energy_j / paper[("flat", *k)].energy_j for k in POINTS)
    layer = statistics.fmean(
        (paper[("flat", *k)].latency_s + linear[("flat", *k)].latency_s)
        / (paper[("fusemax", *k)].latency_s + linear[("fusemax", *k)].latency_s) for k in POINTS)
    assert speedup == pytest.approx(6.7, abs=0.05)
    assert energy == pytest.approx(0.79, abs=0.01)
    assert layer == pytest.approx(5.3, abs=0.05)


@pytest.mark.parametrize("design", ["fusemax", "unfused"])
def test_fusemax_and_unfused_latency_match_the_paper_at_every_point(ours, paper, design):
    for k in POINTS:
        assert ours[(design, *k)].attention.latency_s == pytest.approx(paper[(design, *k)].latency_s, rel=1e-3), k


def test_fusemax_traffic_matches_the_paper_and_is_compulsory_when_k_and_v_fit(ours, paper):
    for model, seq_len in POINTS:
        estimate = ours[("fusemax", model, seq_len)].attention
        assert estimate.traffic_bytes == pytest.approx(paper[("fusemax", model, seq_len)].traffic_bytes, rel=1e-6)
    w = ours[("fusemax", "BERT", 1024)].attention.problem
    assert ours[("fusemax", "BERT", 1024)].attention.traffic_bytes == 4 * w.batch * w.q_heads * w.kv_len * w.head_dim * 2


def test_flat_at_the_artifacts_mapping_matches_its_latency_and_traffic_at_every_point(ours, paper):
    # FLAT's explorer's staging, stationarity and row block per point (paper_reference.flat_mapping)
    for model, seq_len in POINTS:
        got, want = ours[("flat", model, seq_len)].attention, paper[("flat", model, seq_len)]
        assert got.latency_s == pytest.approx(want.latency_s, rel=1e-3), (model, seq_len)
        assert got.traffic_bytes == pytest.approx(want.traffic_bytes, rel=1e-3), (model, seq_len)


def test_flat_streams_q_k_and_v_past_the_buffer_at_short_lengths(ours):
    # BERT 1K, head granularity, output stationary: Q, K and V are re-read once per 256-wide
    # tile of the other operand (1024 / 256 = 4 times), the output written once: 13 N x E words
    estimate = ours[("flat", "BERT", 1024)].attention
    w = estimate.problem
    assert estimate.traffic_bytes == pytest.approx(13 * w.batch * w.q_heads * w.kv_len * w.head_dim * 2, rel=1e-12)


def test_average_attention_speedup_over_flat_is_within_5_percent_of_6_7x(ours):
    speedup = statistics.fmean(ours[("flat", *k)].attention.latency_s / ours[("fusemax", *k)].attention.latency_s for k in POINTS)
    assert 6.72 * 0.95 <= speedup <= 6.72 * 1.05


def test_end_to_end_layer_speedup_is_within_5_percent_of_5_3x(ours):
    speedup = statistics.fmean(ours[("flat", *k)].layer_latency_s / ours[("fusemax", *k)].layer_latency_s for k in POINTS)
    assert 5.30 * 0.95 <= speedup <= 5.30 * 1.05


def test_linear_layers_match_the_papers_latency_and_traffic(ours):
    linear = linear_points()
    for k in POINTS:
        for design in ("flat", "fusemax"):
            assert ours[(design, *k)].linear_latency_s == pytest.approx(linear[(design, *k)].latency_s, rel=1e-3)


def test_fusemax_uses_less_energy_than_flat_everywhere_within_the_documented_band(ours, paper):
    ratios = [ours[("fusemax", *k)].attention.energy_j / ours[("flat", *k)].attention.energy_j for k in POINTS]
    assert all(r < 1 for r in ratios)
    # the paper's 78.7 %; ours is higher for the reason docs/validation.md gives (FLAT's PE model)
    assert 0.85 <= statistics.fmean(ratios) <= 0.95
    for k in POINTS:
        assert ours[("fusemax", *k)].attention.energy_j == pytest.approx(paper[("fusemax", *k)].energy_j, rel=0.03)
        assert ours[("unfused", *k)].attention.energy_j == pytest.approx(paper[("unfused", *k)].energy_j, rel=0.06)


def test_utilisation_shows_flats_load_imbalance_and_fusemax_removing_it(ours, paper):
    for model, seq_len in POINTS:
        flat = ours[("flat", model, seq_len)].attention.utilization
        fusemax = ours[("fusemax", model, seq_len)].attention.utilization
        e = ours[("flat", model, seq_len)].attention.problem.head_dim
        if seq_len <= 65536:
            # QK and AV on 65536 PEs (2E MACs per score) against 4 softmax ops on 256 PEs
            assert flat["pe_2d"] == pytest.approx(2 * e / (4 * 256), rel=1e-3)
            assert flat["pe_1d"] == pytest.approx(1.0, rel=1e-3)
        assert fusemax["pe_2d"] == pytest.approx(paper[("fusemax", model, seq_len)].util_2d, rel=2e-3)
        assert fusemax["pe_1d"] == pytest.approx(1.0, rel=1e-3)


def test_without_software_pipelining_the_arrays_idle_while_the_reduction_drains(ours):
    for k in POINTS:
        staged = ours[("+architecture", *k)].attention
        # each epoch waits ~256 cycles for the local max to drain out of the array
        assert staged.utilization["pe_2d"] < 0.55
        assert staged.latency_s > 1.8 * ours[("fusemax", *k)].attention.latency_s


def test_flat_buffer_need_grows_with_sequence_length_and_fusemaxs_does_not():
    flat = [runs.minimum_buffer_bytes("flat", "BERT", n) for n in PAPER_SEQ_LENS]
    fusemax = [runs.minimum_buffer_bytes("fusemax", "BERT", n) for n in PAPER_SEQ_LENS]
    assert len(set(fusemax)) == 1
    assert fusemax[0] < 256 * 2**10
    for shorter, longer, n in zip(flat, flat[1:], PAPER_SEQ_LENS):
        # 4x the length: 4x the rows of QK, beside a constant 256 KiB of array tiles
        assert longer - 256 * 2**10 == pytest.approx(4 * (shorter - 256 * 2**10))
    assert flat[-1] == pytest.approx(256 * 1048576 * 2, rel=0.01)  # a 256-row block of QK at 1M


def test_the_validation_tables_render(ours):
    text = pv.markdown(ours)
    assert "attention speedup, FuseMax over FLAT" in text and "| BERT | 1K |" in text


def test_figure_12_minimal_buffers_match_with_single_buffered_tiles_and_double_them_otherwise():
    paper = pareto_points()
    points = runs.figure12("single", models=("BERT",))
    assert len(points) == 6
    for (model, pe_dim), (estimate, buffer) in points.items():
        want = paper[(model, pe_dim)]
        assert estimate.traffic_bytes == pytest.approx(want.traffic_bytes, rel=1e-6), pe_dim
        assert estimate.latency_s == pytest.approx(want.latency_s, rel=1e-6), pe_dim
    # a tile loading while the previous one is used halves the query block in the same buffer
    estimate, buffer = points[("BERT", 64)]
    double = simulate("fusemax", estimate.problem, runs.scaled_fusemax(64, buffer), {"buffering": "double"})
    assert double.traffic_bytes == pytest.approx(2 * estimate.traffic_bytes, rel=1e-3)


def test_fusemax_needs_a_constant_buffer_while_the_mapper_fills_more_as_the_sequence_grows(ours):
    estimates = [ours[("fusemax", "BERT", n)].attention for n in PAPER_SEQ_LENS]
    assert len({e.buffer_needed_bytes for e in estimates}) == 1
    assert estimates[0].buffer_needed_bytes < 256 * 2**10
    assert estimates[-1].buffer_bytes > 10 * estimates[0].buffer_needed_bytes


def test_flats_own_headline_needs_the_softmax_off_the_1d_array():
    # FLAT's paper models only the 2D array; with the softmax's 1D array as wide as the 2D one
    # FLAT's advantage over the unfused baseline is traffic alone and grows past the 1D-bound ratio
    bound = runs.flat_headline("cloud", models=("BERT",), seq_lens=(4096,))
    what_if = runs.flat_headline("cloud", what_if=True, models=("BERT",), seq_lens=(4096,))
    assert 1.5 < bound["speedup"] < 1.8
    assert what_if["speedup"] > 2 * bound["speedup"]


def test_flats_operators_match_the_artifact_at_lengths_the_model_was_not_built_on():
    errors = runs.flat_operator_errors("cloud")
    held_out = {k: v for k, v in errors.items() if k[1] not in PAPER_SEQ_LENS}
    assert len(held_out) == 24
    assert max(abs(v) for v in held_out.values()) < 0.005
    assert abs(errors[("BERT", 131072)]) < 0.005  # half of its QK rows overbooked
