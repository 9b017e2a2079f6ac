"""Masks and filters empty tiles, and a spatial design spends nothing on an empty tile: no work,
no K/V reads, no live rows (docs/simulator.md §3.1, §5.1-5.2, §5.6), whether the mask is the
problem's, the cascade's or each Einsum's own `where`."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from einsim.einsum_cascades.loader import library_dir, parse_cascade
from einsim.problem import Problem
from einsim.simulator.simulate import simulate

SINKS_WINDOW = "m <= p + M - P and (m < 4 or m >= p + M - P - 255)"
LONG = Problem(batch=1, q_heads=4, q_len=16384, kv_len=16384, head_dim=64)


def _with_filter(library_name: str, where_on: tuple[str, ...] | None = None) -> str:
    """A library cascade with the sinks + window filter, cascade-wide, or as a `where` on each of
    the Einsums named (the way a user may write it)."""
    text = (library_dir() / f"{library_name}.yaml").read_text().replace(f"name: {library_name}", "name: sinks-window-test", 1)
    if where_on is None:
        return text.replace("\ninputs:", f'\nfilters: ["{SINKS_WINDOW}"]\ninputs:', 1)
    out = []
    for line in text.splitlines():
        found = re.match(r"(\s+- (\w+)\[.*?)(\s+#.*)?$", line)
        if found and found.group(2) in where_on:
            line = f"{found.group(1).rstrip()} where {SINKS_WINDOW}"
        out.append(line)
    return "\n".join(out)


def test_sinks_and_a_window_cost_a_fraction_of_causal_attention_on_fusemax():
    window = simulate("sinks-window", LONG, "fusemax-cloud")
    causal = simulate("fusemax", replace(LONG, causal=True), "fusemax-cloud")
    # 3 of 64 key tiles per query tile against 32.5 on average for causal
    assert window.latency_s < 0.12 * causal.latency_s
    assert window.energy_j < 0.12 * causal.energy_j
    w = LONG
    assert window.traffic_bytes == pytest.approx(4 * w.batch * w.q_heads * w.kv_len * w.head_dim * 2)
    assert window.fits


def test_a_where_on_each_einsum_empties_the_same_tiles_as_a_cascade_filter():
    cascade_wide = simulate(parse_cascade(_with_filter("fusemax")), LONG, "fusemax-cloud")
    per_einsum = simulate(parse_cascade(_with_filter("fusemax", ("QK", "LM", "SLN", "SLD", "SLNV"))), LONG, "fusemax-cloud")
    assert per_einsum.latency_s == cascade_wide.latency_s
    assert per_einsum.traffic_bytes == cascade_wide.traffic_bytes
    assert per_einsum.energy_j == pytest.approx(cascade_wide.energy_j)


@pytest.mark.parametrize("staging", ["fused", "resident"])
def test_a_three_pass_window_keeps_only_the_rows_it_sees_live(staging):
    problem = replace(LONG, q_len=65536, kv_len=65536)
    full = simulate("attention-3pass", problem, "flat-cloud", {"staging": staging})
    window = simulate(parse_cascade(_with_filter("attention-3pass")), problem, "flat-cloud", {"staging": staging})
    # a 256-row block keeps 3 key tiles of 256 (sinks, window) of each row live, not 65536 keys
    assert full.buffer_needed_bytes > 32 * 2**20 > 1 * 2**20 > window.buffer_needed_bytes
    assert window.fits and window.latency_s < 0.02 * full.latency_s


def test_the_problems_window_is_a_mask_like_a_filter():
    problem = replace(LONG, window=(255, 0))
    by_problem = simulate("attention-3pass", problem, "flat-cloud", {"staging": "resident"})
    by_filter = simulate(parse_cascade(_with_filter("attention-3pass").replace("(m < 4 or m >= p + M - P - 255)", "m >= p + M - P - 255")),
                         LONG, "flat-cloud", {"staging": "resident"})
    assert by_problem.traffic_bytes == pytest.approx(by_filter.traffic_bytes)
    assert by_problem.buffer_needed_bytes == pytest.approx(by_filter.buffer_needed_bytes)


def test_linear_attentions_diagonal_blocks_read_k_and_v_once():
    problem = replace(LONG, q_len=65536, kv_len=65536)
    estimate = simulate("linear-attention", problem, "fusemax-cloud")
    w = problem
    assert estimate.traffic_bytes == pytest.approx(4 * w.batch * w.q_heads * w.kv_len * w.head_dim * 2)


def test_a_filter_on_data_keeps_its_other_terms_and_says_so():
    estimate = simulate("packed-documents", Problem(batch=1, q_heads=2, q_len=4096, kv_len=4096, head_dim=64), "fusemax-cloud")
    assert any("read DQ, DK" in note for note in estimate.notes)
    # the causal term still empties the upper triangle: 16 x 17 / 2 of 16 x 16 tiles
    assert any("53.1% of the 256 x 256 tiles" in note for note in estimate.notes)
