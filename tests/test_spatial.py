"""The spatial-accelerator model: bindings, per-point costs, buffer need and spills, traffic, the
schedules, masks and energy, each checked against the formula docs/simulator.md gives."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from einsim.einsum_cascades import load_cascade
from einsim.errors import ConfigError
from einsim.simulator.mapping import Mapping, load_mapping
from einsim.simulator.simulate import simulate
from einsim.simulator.spatial import compile_design, cycles_per_point, visible_tile_fraction
from einsim.simulator.sweep import buffer_sweep
from einsim.problem import Problem
from einsim.targets import load_target

BERT_4K = Problem(batch=64, q_heads=12, q_len=4096, kv_len=4096, head_dim=64, name="BERT/4K")


def bert(seq_len: int) -> Problem:
    return replace(BERT_4K, q_len=seq_len, kv_len=seq_len)


def test_fusemax_binds_the_key_tile_plane_to_the_2d_array_and_running_statistics_to_the_1d():
    estimate = simulate("fusemax", BERT_4K, "fusemax-cloud")
    units = {e.einsum: e.unit for e in estimate.per_einsum}
    assert {n for n, u in units.items() if u == "pe_2d"} == {"QK", "LM", "SLN", "SLD", "SLNV"}
    assert {n for n, u in units.items() if u == "pe_1d"} == {"RM", "PRM", "SPD", "RD", "SPNV", "RNV", "AV"}


def test_flat_binds_only_contractions_to_the_2d_array():
    estimate = simulate("attention-3pass", BERT_4K, "flat-cloud")
    assert {e.einsum for e in estimate.per_einsum if e.unit == "pe_2d"} == {"QK", "AV"}
    assert estimate.passes == 3


def test_exp_costs_six_macs_plus_the_subtract_without_an_exp_unit_and_pipelines_with_one():
    sub_exp = {"mul": 0, "add": 0, "sub": 1, "div": 0, "exp": 1, "max": 0, "min": 0}
    assert cycles_per_point(sub_exp, load_target("fusemax-cloud").unit("exp"), 256) == 7
    assert cycles_per_point(sub_exp, load_target("flat-cloud").unit("exp"), 256) == 1
    mac = {"mul": 1, "add": 1, "sub": 0, "div": 0, "exp": 0, "max": 0, "min": 0}
    assert cycles_per_point(mac, load_target("flat-cloud").unit("exp"), 256) == 1


def test_fusemax_epoch_is_the_1d_arrays_work_when_pipelined():
    # per 256 x 256 epoch the 1D array does RM 1 + PRM 7 + SPD 1 + RD 1 + SPNV 64 + RNV 64 cycles
    # plus the amortised final division; the 2D array 137: pipelining hides the difference
    w = bert(1 << 20)
    estimate = simulate("fusemax", w, "fusemax-cloud")
    epochs = w.batch * w.q_heads * (w.kv_len // 256) * (w.q_len // 256)
    division = w.batch * w.q_heads * w.head_dim * w.q_len / 256
    cycles = epochs * 138 + division + 512  # + one fill/drain of the array
    assert estimate.latency_s == pytest.approx(cycles / 940e6, rel=1e-6)
    assert estimate.bound == "pe_1d"


def test_sequential_schedule_exposes_the_arrays_drain_and_the_dependences():
    pipelined = simulate("fusemax", BERT_4K, "fusemax-cloud")
    staged = simulate("fusemax", BERT_4K, "fusemax-cloud", Mapping(schedule="sequential"))
    # 2D work per epoch 137 cycles + 256 drain of the local max + 1 for the running max
    assert staged.latency_s / pipelined.latency_s == pytest.approx(394 / 138, rel=0.05)
    assert staged.utilization["pe_2d"] == pytest.approx(137 / 394, rel=0.02)
    assert staged.traffic_bytes == pipelined.traffic_bytes


def test_fusemax_reaches_the_compulsory_traffic_with_enough_buffer():
    w = bert(16384)
    rows = buffer_sweep("fusemax", w, "fusemax-cloud", capacities=[64 * 2**20])
    assert rows[0]["traffic_bytes"] == 4 * w.batch * w.q_heads * w.kv_len * w.head_dim * 2
    assert rows[0]["traffic_over_compulsory"] == pytest.approx(1.0)


def test_a_live_row_that_does_not_fit_spills_and_traffic_grows():
    w = bert(16384)
    design = compile_design(load_cascade("attention-3pass"), w, load_target("flat-cloud"),
                            Mapping(query_block=256, spill="store", staging="resident"))
    # a 256-row block of QK is 8 MiB: at 6 and 4 MiB part of it spills (K and V re-read alike)
    result = design.evaluate(np.array([256.0, 256.0]), "store", np.array([6 * 2**20, 4 * 2**20]))
    qk_bytes = w.batch * w.q_heads * w.q_len * w.kv_len * 2
    live = 256 * w.kv_len * 2
    more_spilled = (result["spill_fraction"][1] - result["spill_fraction"][0])
    assert more_spilled == pytest.approx(2 * 2**20 / live)
    # QK and SN: each written once and read once more
    assert result["traffic_bytes"][1] - result["traffic_bytes"][0] == pytest.approx(4 * qk_bytes * more_spilled, rel=1e-9)


def test_recomputing_instead_of_storing_rereads_k_and_redoes_qk():
    w = bert(16384)
    design = compile_design(load_cascade("attention-3pass"), w, load_target("flat-cloud"), Mapping(staging="resident"))
    store = design.evaluate(np.array([256.0]), "store", 256 * 2**10)
    recompute = design.evaluate(np.array([256.0]), "recompute", 256 * 2**10)
    assert recompute["traffic_bytes"][0] < store["traffic_bytes"][0]
    assert recompute["einsum_cycles"]["QK"][0] > store["einsum_cycles"]["QK"][0]


def test_unfused_runs_three_kernels_with_every_intermediate_through_dram():
    w = bert(4096)
    estimate = simulate("attention-3pass", w, "unfused-cloud")
    assert estimate.mapping["groups"] == [["QK"], ["GM", "SN", "SD", "A"], ["AV"]]
    qk = w.batch * w.q_heads * w.q_len * w.kv_len * 2
    # QK written and read back, A written and read back, plus Q, K, V, O once
    assert estimate.traffic_bytes == pytest.approx(4 * qk + 4 * w.batch * w.q_heads * w.kv_len * 64 * 2, rel=1e-9)


def test_a_causal_mask_skips_the_invisible_tiles():
    w = bert(4096)
    full = simulate("fusemax", w, "fusemax-cloud")
    causal = simulate("fusemax", replace(w, causal=True), "fusemax-cloud")
    fraction = visible_tile_fraction(replace(w, causal=True), 256, 256)
    assert fraction == pytest.approx((16 * 17 / 2) / 256)
    assert causal.latency_s == pytest.approx(full.latency_s * fraction, rel=0.05)
    # every key is visible to some query: K and V are still read once
    assert causal.traffic_bytes == full.traffic_bytes
    assert visible_tile_fraction(replace(w, q_len=1, causal=True), 256, 256) == 1.0  # decode sees the whole cache


def test_energy_components_add_up_and_match_the_per_einsum_rows():
    estimate = simulate("attention-3pass", bert(16384), "flat-cloud")
    assert sum(estimate.energy_by_component.values()) == pytest.approx(estimate.energy_j, rel=1e-9)
    assert sum(e.energy_j for e in estimate.per_einsum) == pytest.approx(estimate.energy_j, rel=1e-6)
    assert sum(e.traffic_bytes for e in estimate.per_einsum) == pytest.approx(estimate.traffic_bytes, rel=1e-9)


def test_the_chosen_mapping_loaded_back_reproduces_the_estimate():
    estimate = simulate("attention-3pass", bert(65536), "flat-cloud")
    again = simulate("attention-3pass", bert(65536), "flat-cloud", load_mapping(estimate.mapping))
    assert again.latency_s == estimate.latency_s and again.traffic_bytes == estimate.traffic_bytes


def test_user_mapping_fields_change_what_they_say():
    w = bert(4096)
    small_tiles = simulate("fusemax", w, "fusemax-cloud", {"key_tile": 128})
    assert small_tiles.mapping["key_tile"] == 128
    # a 128-row key tile leaves half the 2D array's rows idle
    assert small_tiles.utilization["pe_2d"] < 0.6
    flat_binding = simulate("fusemax", w, "flat-cloud", {"dataflow": "fusemax", "binding": "flat"})
    assert {e.einsum for e in flat_binding.per_einsum if e.unit == "pe_2d"} == {"QK", "SLNV"}
    moved = simulate("fusemax", w, "fusemax-cloud", {"binding": {"SLN": "pe_1d"}})
    assert dict((e.einsum, e.unit) for e in moved.per_einsum)["SLN"] == "pe_1d"
    assert moved.latency_s > simulate("fusemax", w, "fusemax-cloud").latency_s


def test_impossible_bindings_are_config_errors():
    with pytest.raises(ConfigError, match="divider"):
        simulate("fusemax", BERT_4K, "fusemax-cloud", {"binding": {"AV": "pe_2d"}})
    with pytest.raises(ConfigError, match="exp"):
        simulate("attention-3pass", BERT_4K, "flat-cloud", {"binding": {"SN": "pe_2d"}})
    with pytest.raises(ConfigError, match="partition"):
        simulate("attention-3pass", BERT_4K, "flat-cloud", {"dataflow": "fusemax"})


def test_a_buffer_too_small_for_one_query_row_is_reported_not_estimated():
    rows = buffer_sweep("attention-3pass", bert(4096), "flat-cloud", capacities=[1024.0])
    assert rows[0]["spill"] == "does not fit" and math.isnan(rows[0]["latency_s"])


def test_a_cascade_without_the_key_rank_on_a_spatial_target_says_what_the_model_needs(capsys):
    from einsim.cli import main

    assert main(["simulate", "--cascade", "ffn", "--target", "fusemax-cloud", "--model", "BERT", "--seq-len", "1k"]) == 2
    err = capsys.readouterr().err
    assert "ffn.yaml: ffn has no rank M (ranks: B, P, D, S); the spatial model streams the key rank M" in err
    assert "simulate_layer" in err


def test_a_gemm_with_an_attention_workload_is_refused_not_costed_on_one_column(capsys):
    # gemm has M but no P: it used to be costed at 0.4 % of the 2D array with M read as kv_len
    from einsim.cli import main

    assert main(["simulate", "--cascade", "gemm", "--target", "flat-cloud", "--model", "BERT", "--seq-len", "1k"]) == 2
    err = capsys.readouterr().err
    assert "gemm.yaml: gemm has no query rank P (ranks: K, M, N)" in err and "simulate_linear" in err


def test_linear_attention_needs_one_pass_and_a_state_of_e_by_f_per_head_whatever_the_length():
    needs = []
    for n in (1024, 16384):
        problem = Problem(batch=2, q_heads=4, q_len=n, kv_len=n, head_dim=64)
        estimate = simulate("linear-attention", problem, "fusemax-cloud")
        assert estimate.passes == 1
        needs.append(estimate.buffer_needed_bytes)
    assert needs[0] == needs[1]
    design = compile_design(load_cascade("linear-attention"), Problem(batch=2, q_heads=4, q_len=1024, kv_len=1024, head_dim=64),
                            load_target("fusemax-cloud"), Mapping())
    assert design.tensors["KV"].role == "state" and design.tensors["KV"].elements == 2 * 4 * 64 * 64
    without_state = design.needed_buffer_bytes() - 64 * 64 * 2
    # the rest is the per-query state of one array-wide tile and the double-buffered key tiles
    assert without_state == 2 * (256 * (64 + 64) + 2 * 256 * (64 + 64))


NOT_ATTENTION = {"gemm", "ffn", "ffn-swiglu"}  # layer cascades: simulate_layer runs them


@pytest.mark.parametrize("target", ["fusemax-cloud", "flat-cloud", "unfused-cloud"])
def test_every_library_cascade_simulates_on_every_spatial_design(target):
    from einsim.einsum_cascades.loader import library_names

    problem = Problem(batch=1, q_heads=4, kv_heads=2, q_len=67, kv_len=130, head_dim=80, window=(40, 0))
    for name in sorted(set(library_names()) - NOT_ATTENTION):
        estimate = simulate(name, problem, target)
        assert estimate.fits and 0 < estimate.latency_s < math.inf, name
        assert estimate.traffic_bytes > 0 and estimate.energy_j > 0, name
        for row in estimate.per_einsum:  # the default binding never asks an array for what it lacks
            assert row.unit in ("pe_2d", "pe_1d") and row.energy_j >= 0, (name, row.einsum)
