"""FLAT's staging (docs/simulator.md §5.6): the loop nest each stationarity runs, what a streamed
tensor costs in DRAM, what a staged one costs in buffer accesses, overbooking, and the mapping
fields that choose them, each against the formula the docs give."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from einsim.einsum_cascades import load_cascade
from einsim.errors import ConfigError, SpecError
from einsim.simulator.mapping import Mapping, load_mapping
from einsim.simulator.simulate import simulate
from einsim.simulator.spatial import compile_design
from einsim.simulator.spatial.staging import Contraction, fetches, loop_nest
from einsim.problem import Problem
from einsim.targets import load_target

QK = Contraction(output="QK", query_operand="Q", key_operand="K", key_rank="M", reduced="E", key_extent=4096, reduced_extent=64)
W = Problem(batch=2, q_heads=3, q_len=4096, kv_len=4096, head_dim=64, name="small")


def counts(stationarity: str, block: float, query_len: float = 4096):
    trips, spread = loop_nest(QK, stationarity, np.array([block]), query_len, 256, 256)
    return {t: float(fetches(trips, spread, QK.tensor_ranks(t))[0]) for t in ("Q", "K", "QK")}


def test_output_stationary_rereads_each_operand_once_per_tile_of_the_other():
    got = counts("output", 1024)
    # Q[e,p] once per 256-key tile, K[e,m] once per 256-query tile, QK once
    assert got["Q"] == 4096 * 64 * (4096 / 256)
    assert got["K"] == 4096 * 64 * (4096 / 256)
    assert got["QK"] == 4096 * 4096


def test_weight_stationary_reads_k_once_per_query_block_and_q_once_per_key_tile():
    got = counts("weight", 1024)
    assert got["K"] == 4096 * 64 * (4096 / 1024)
    assert got["Q"] == 4096 * 64 * (4096 / 256)
    assert counts("weight", 4096)["K"] == 4096 * 64  # one block: K stays in the PEs


def test_input_stationary_keeps_q_in_the_pes():
    got = counts("input", 4096)
    assert got["Q"] == 4096 * 64
    assert got["K"] == 4096 * 64 * (4096 / 256)


def _design(mapping: dict, problem: Problem = W, target: str = "flat-cloud"):
    return compile_design(load_cascade("attention-3pass"), problem, load_target(target), load_mapping(mapping))


def test_staging_k_and_v_reads_them_once_instead_of_per_tile():
    streamed = _design({"staging": "fused", "query_block": 4096})
    staged = _design({"staging": {"K": "buffer", "V": "buffer"}, "query_block": 4096})
    a = streamed.evaluate(np.array([4096.0]), capacity=np.inf)
    b = staged.evaluate(np.array([4096.0]), capacity=np.inf)
    heads, ne = W.batch * W.q_heads, W.kv_len * W.head_dim
    # K and V: 16 tile re-reads each when streamed, once when staged
    assert a["traffic_bytes"][0] - b["traffic_bytes"][0] == pytest.approx(2 * heads * ne * 2 * (16 - 1))


def test_the_fused_plan_keeps_the_blocks_rows_and_the_tiles_and_overbooks_beyond():
    design = _design({"staging": "fused"})
    block = np.array([256.0, 256.0])
    rows_bytes = 256 * W.kv_len * 2
    tiles = (256 * 256 + 2 * (256 + 256) * 64) * 2  # the score tile, Q and K tiles double-buffered
    result = design.evaluate(block, capacity=np.array([np.inf, (rows_bytes + tiles) / 2]))
    assert result["buffer_bytes"][0] == pytest.approx(rows_bytes + tiles)
    assert result["spill_fraction"][1] == pytest.approx(0.5)  # half of every staged access goes to DRAM
    heads, n2 = W.batch * W.q_heads, W.q_len * W.kv_len
    # QK written and read twice, SN written and read once, A written and read once: 7 accesses
    assert result["traffic_bytes"][1] - result["traffic_bytes"][0] == pytest.approx(0.5 * 7 * heads * n2 * 2)


def test_single_buffering_halves_the_streamed_tiles():
    double = _design({"staging": "fused"}).evaluate(np.array([256.0]), capacity=np.inf)
    single = _design({"staging": "fused", "buffering": "single"}).evaluate(np.array([256.0]), capacity=np.inf)
    assert double["buffer_bytes"][0] - single["buffer_bytes"][0] == pytest.approx((256 + 256) * 64 * 2)


def test_rows_plan_streams_the_planes_through_dram_once_each_way():
    design = _design({"staging": "rows", "query_block": 4096})
    result = design.evaluate(np.array([4096.0]), capacity=np.inf)
    heads, n2, ne = W.batch * W.q_heads, W.q_len * W.kv_len, W.kv_len * W.head_dim
    # QK out and back in, A out and back in; Q and O once; K and V once (one block)
    assert result["traffic_bytes"][0] == pytest.approx(heads * 2 * (4 * n2 + 4 * ne))


def test_flats_policy_picks_the_rows_plan_when_the_rows_cannot_fit():
    long = replace(W, q_len=1 << 20, kv_len=1 << 20, batch=1, q_heads=1, kv_heads=1)  # one row of QK: 2 MiB
    estimate = simulate("attention-3pass", long, "flat-edge")  # 512 KiB
    assert estimate.mapping["staging"]["QK"] == "stream" and estimate.mapping["stationarity"]["QK"] == "weight"
    short = simulate("attention-3pass", W, "flat-cloud")
    assert short.mapping["staging"]["QK"] == "buffer" and short.mapping["stationarity"]["QK"] == "output"


def test_the_chosen_flat_mapping_loads_back_to_the_same_estimate():
    estimate = simulate("attention-3pass", W, "flat-cloud")
    again = simulate("attention-3pass", W, "flat-cloud", estimate.mapping)
    assert again.traffic_bytes == estimate.traffic_bytes and again.latency_s == estimate.latency_s


def test_resident_keeps_the_fusemax_papers_reading_of_flat():
    estimate = simulate("attention-3pass", W, "flat-cloud", {"staging": "resident"})
    w = W
    assert estimate.traffic_bytes == pytest.approx(4 * w.batch * w.q_heads * w.kv_len * w.head_dim * 2)  # K, V kept


@pytest.mark.parametrize("document, words", [
    ({"staging": {"Z": "buffer"}}, "no tensor 'Z'"),
    ({"stationarity": {"GM": "output"}}, "'GM' is not a contraction"),
    ({"staging": "fused", "spill": "store"}, "spill: store applies to staging: resident"),
])
def test_a_staging_that_does_not_fit_the_cascade_is_a_named_error(document, words):
    with pytest.raises(ConfigError, match=words):
        simulate("attention-3pass", W, "flat-cloud", document)


@pytest.mark.parametrize("document, words", [
    ({"staging": {"QK": "dram"}}, "staging.QK: expected buffer or stream"),
    ({"stationarity": {"QK": "row"}}, "stationarity.QK: expected output, weight or input"),
    ({"buffering": "triple"}, "buffering: expected one of single, double"),
])
def test_a_misspelt_staging_field_is_a_spec_error(document, words):
    with pytest.raises(SpecError, match=words):
        load_mapping(document)


def test_staging_on_a_one_pass_cascade_says_it_is_flats():
    with pytest.raises(ConfigError, match="describe FLAT's dataflow"):
        simulate("fusemax", W, "fusemax-cloud", Mapping(staging="fused"))
