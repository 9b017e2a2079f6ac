"""The GPU cost model visits the tiles a cascade's own filters keep (einsum_cascades.tiles): a
sinks + window or 2-D neighbourhood cascade is not priced as the problem's causal mask."""

from dataclasses import replace

import numpy as np
import pytest

from einsim.einsum_cascades import load_cascade
from einsim.einsum_cascades.tiles import classify_tiles
from einsim.problem import Problem
from einsim.simulator.gpu_cost.cascade_plan import FilterMask, tile_mask
from einsim.simulator.simulate import simulate

CAUSAL_16K = Problem(batch=1, q_heads=32, kv_heads=8, q_len=16384, kv_len=16384, head_dim=128, causal=True)


def test_causal_and_window_cascades_keep_the_problems_own_mask():
    assert isinstance(tile_mask(load_cascade("attention-causal"), CAUSAL_16K), Problem)
    assert isinstance(tile_mask(load_cascade("fusemax"), CAUSAL_16K), Problem)
    # a filter that reads document ids without their values: its other terms (causal) stand for it
    documents = tile_mask(load_cascade("packed-documents"), CAUSAL_16K)
    assert isinstance(documents, FilterMask) and documents.drop_reads
    np.testing.assert_array_equal(documents.tile_counts(128, 128).visited, CAUSAL_16K.tile_counts(128, 128).visited)


def test_sinks_and_window_visit_only_their_tiles_and_cost_a_fraction_of_causal():
    cascade = load_cascade("sinks-window")
    mask = tile_mask(cascade, CAUSAL_16K)
    assert isinstance(mask, FilterMask)
    counts = mask.tile_counts(128, 128)
    expected = classify_tiles(cascade, {"q_len": 16384, "kv_len": 16384}, 128, 128).tile_counts()
    np.testing.assert_array_equal(counts.visited, expected.visited)
    assert counts.visited.max() <= 4  # the sink tile and the window's (at most three)
    window = simulate(cascade, CAUSAL_16K, "h100-sxm").latency_s
    causal = simulate("attention-causal", CAUSAL_16K, "h100-sxm").latency_s
    assert window < causal / 10


def test_prefix_lm_prices_its_prefix_and_says_when_a_causal_problem_masks_it():
    problem = Problem(batch=1, q_heads=4, q_len=8192, kv_len=8192, head_dim=128, symbols={"prefix": 4096})
    prefix = simulate("prefix-lm", problem, "h200")
    causal = simulate("attention-causal", replace(problem, causal=True), "h200")
    # the problem's prefix (not the YAML's 256) is classified: the first query tile sees the 32 prefix tiles
    counts = tile_mask(load_cascade("prefix-lm"), problem).tile_counts(128, 128)
    assert counts.visited[0] == 32 and counts.visited[-1] == 64
    # query tiles 0..31 visit the 32 prefix tiles, 32..63 their causal 33..64: 2576 tiles, causal 2080
    assert prefix.compute_ops["mac"] == pytest.approx(causal.compute_ops["mac"] * 2576 / 2080)
    assert prefix.latency_s >= causal.latency_s
    assert not any("and-ed" in note for note in prefix.notes)
    on_causal = simulate("prefix-lm", replace(problem, causal=True), "h200")
    assert on_causal.latency_s == causal.latency_s
    assert any("causal mask is and-ed with prefix-lm's filter" in note for note in on_causal.notes)
