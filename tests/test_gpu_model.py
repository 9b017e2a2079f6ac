"""The GPU model is physically sane: more tokens take longer, causal masks do about half the
work, multi-pass cascades move more bytes than the 1-pass one, decode is bandwidth-bound, and the
roofs are the target's."""

from __future__ import annotations

import pytest

from einsim.errors import ConfigError
from einsim.simulator import load_model
from einsim.simulator.gpu_cost import GpuMapping, gpu_mapping
from einsim.simulator.gpu_cost.estimate import simulate_gpu
from einsim.simulator.gpu_cost.roofs import gpu_roofs
from einsim.problem import Problem
from einsim.einsum_cascades import load_cascade
from einsim.targets import load_target

H100 = load_target("h100-sxm")
FUSEMAX = load_cascade("fusemax")


def layer(n=4096, d=128, heads=16, batch=1, **kw):
    return Problem(batch=batch, q_heads=heads, q_len=n, kv_len=n, head_dim=d, **kw)


def test_roofs_are_the_targets_measured_or_datasheet_figures():
    measured = gpu_roofs(H100)
    assert measured.matmul_flops == pytest.approx(798e12) and measured.matmul_source == "measured"
    assert measured.hbm_bytes_per_s == pytest.approx(3.0e12) and measured.hbm_source == "measured"
    assert measured.exp_per_s == pytest.approx(16 * 132 * 1.98e9)
    assert measured.sm_count == 132 and measured.smem_bytes_per_sm == 228 * 1024
    datasheet = gpu_roofs(H100, source="datasheet")
    assert datasheet.matmul_flops == pytest.approx(989.4e12) and datasheet.hbm_bytes_per_s == pytest.approx(3.35e12)
    assert gpu_roofs(load_target("a100-80gb")).matmul_source == "datasheet"  # nothing measured on an A100 here
    with pytest.raises(Exception, match="gpu"):
        gpu_roofs(load_target("fusemax-cloud"))


@pytest.mark.parametrize("cascade", ["fusemax", "attention-3pass"])
def test_more_tokens_take_more_time(cascade):
    times = [simulate_gpu(load_cascade(cascade), layer(n), H100).latency_s for n in (1024, 2048, 4096, 8192, 16384)]
    assert all(b > a for a, b in zip(times, times[1:]))
    # prefill is quadratic: doubling N roughly quadruples the time once the GPU is full
    assert 3.5 < times[-1] / times[-2] < 4.5


def test_causal_does_about_half_the_matmul_work():
    full = simulate_gpu(FUSEMAX, layer(8192), H100)
    causal = simulate_gpu(FUSEMAX, layer(8192, causal=True), H100)
    ratio = causal.compute_ops["mac"] / full.compute_ops["mac"]
    assert 0.5 <= ratio < 0.52  # whole tiles on the diagonal are computed
    assert 0.45 < causal.latency_s / full.latency_s < 0.6


def test_a_sliding_window_bounds_the_work():
    w = layer(32768, causal=True, window=(4096, 0))
    est = simulate_gpu(FUSEMAX, w, H100)
    full = simulate_gpu(FUSEMAX, layer(32768, causal=True), H100)
    assert est.compute_ops["mac"] < 0.3 * full.compute_ops["mac"]


def test_multipass_cascades_move_more_bytes_than_fusemax():
    w = layer(8192, heads=32)
    one = simulate_gpu(FUSEMAX, w, H100)
    recompute = simulate_gpu(load_cascade("attention-3pass"), w, H100)
    materialize = simulate_gpu(load_cascade("attention-3pass"), w, H100, {"multipass": "materialize"})
    assert (one.passes, recompute.passes) == (1, 3)
    assert one.traffic_bytes < recompute.traffic_bytes < materialize.traffic_bytes
    # 1-pass: Q, K, V read and O written once (the compulsory 4 x B*H*N*D words)
    assert one.traffic_bytes == pytest.approx(4 * 32 * 8192 * 128 * 2)
    # recompute: each pass is a launch, so passes 2 and 3 re-read Q and K; the row statistics GM
    # (written by 1, read by 2 and 3) and SD (written by 2, read by 3) cross in fp32.
    # materialize writes QK and SN in fp32 and reads them back
    words, rows = 32 * 8192 * 128 * 2, 32 * 8192 * 4
    assert recompute.traffic_bytes == pytest.approx(one.traffic_bytes + 4 * words + 5 * rows)
    assert materialize.traffic_bytes > one.traffic_bytes + 4 * 32 * 8192 * 8192 * 4 * 0.99
    assert materialize.bound == "hbm" and materialize.latency_s > one.latency_s
    assert recompute.compute_ops["mac"] == pytest.approx(2 * one.compute_ops["mac"], rel=0.01)


def test_decode_is_bandwidth_bound_and_reads_the_kv_cache_once():
    model = load_model("llama3-8b")
    for n in (4096, 32768, 131072):
        est = simulate_gpu(FUSEMAX, model.problem(n, "decode", batch=8), H100)
        assert est.bound == "hbm"
        kv_cache = 2 * 8 * 8 * n * 128 * 2
        assert kv_cache <= est.traffic_bytes < 1.1 * kv_cache + 1e6
        assert est.utilization["hbm"] > 0.6
        assert est.utilization["tensor_core"] < 0.5  # padded MMAs of a 64-row decode tile, still not the bound


def test_gqa_reads_kv_heads_not_query_heads():
    mha = simulate_gpu(FUSEMAX, Problem(batch=4, q_heads=32, q_len=1, kv_len=16384, head_dim=128), H100)
    gqa = simulate_gpu(FUSEMAX, Problem(batch=4, q_heads=32, kv_heads=8, q_len=1, kv_len=16384, head_dim=128), H100)
    assert gqa.traffic_bytes < 0.3 * mha.traffic_bytes and gqa.latency_s < 0.4 * mha.latency_s


def test_compute_goes_to_the_right_units():
    est = simulate_gpu(FUSEMAX, layer(4096, d=64, heads=32), H100)
    units = {row.einsum: row.unit for row in est.per_einsum}
    assert units["QK"] == units["SLNV"] == "tensor_core"
    assert units["SLN"] == units["PRM"] == "sfu"
    assert units["LM"] == units["RM"] == units["RD"] == units["AV"] == "cuda_core"
    # at head dim 64 the exponentials weigh twice as much against the matmuls as at 128 (16 ex2/clk/SM
    # against half the MACs per score); both are compute-bound, never HBM-bound
    wide = simulate_gpu(FUSEMAX, layer(4096, d=128), H100)
    assert est.utilization["sfu"] / est.utilization["tensor_core"] > 1.8 * wide.utilization["sfu"] / wide.utilization["tensor_core"]
    assert est.bound in ("tensor_core", "sfu", "cuda_core") and wide.bound in ("tensor_core", "l2")
    assert set(est.utilization) >= {"tensor_core", "sfu", "cuda_core", "hbm", "l2"}
    assert all(0.0 <= value <= 1.0 + 1e-9 for value in est.utilization.values())


def test_estimate_is_complete_and_consistent():
    est = simulate_gpu(FUSEMAX, layer(4096), H100)
    assert est.fits and est.buffer_bytes <= est.buffer_capacity_bytes
    assert est.traffic_by_level["hbm"] == est.traffic_bytes
    assert est.energy_j == pytest.approx(sum(est.energy_by_component.values()))
    assert est.energy_j > 0 and est.latency_s > H100.launch_overhead_s
    assert sum(row.traffic_bytes for row in est.per_einsum) == pytest.approx(est.traffic_bytes)
    json = est.to_dict()
    assert {"passes", "buffer_bytes", "fits", "traffic_bytes", "latency_s", "energy_j", "utilization", "per_einsum"} <= set(json)


def test_small_problems_pay_wave_quantisation_and_launch():
    tiny = simulate_gpu(FUSEMAX, Problem(batch=1, q_heads=1, q_len=128, kv_len=128, head_dim=64), H100)
    assert tiny.bound == "launch" or tiny.latency_s < 10e-6
    assert any("programs for 132 SMs" in note for note in tiny.notes)
    # 133 CTAs need two waves: about twice the time of 132 (one K/V head, so compute-bound)
    no_split = {"kv_splits": 1}
    one_wave = simulate_gpu(FUSEMAX, Problem(batch=1, q_heads=132, kv_heads=1, q_len=128, kv_len=32768, head_dim=128), H100, no_split)
    two_waves = simulate_gpu(FUSEMAX, Problem(batch=1, q_heads=133, kv_heads=1, q_len=128, kv_len=32768, head_dim=128), H100, no_split)
    assert one_wave.bound in ("tensor_core", "l2")  # compute or its K/V tile loads, not HBM
    assert two_waves.latency_s > 1.8 * one_wave.latency_s


def test_a_mapping_that_overflows_shared_memory_does_not_fit():
    est = simulate_gpu(FUSEMAX, layer(4096, d=256), H100, {"block_m": 256, "block_n": 256, "num_stages": 4})
    assert not est.fits and any("does not fit" in note for note in est.notes)


def test_kernel_styles_order_as_on_hopper():
    w = layer(16384, d=128)
    times = {style: simulate_gpu(FUSEMAX, w, H100, {"kernel_style": style}).latency_s for style in ("cudnn", "flex", "fa2")}
    assert times["cudnn"] < times["flex"] < times["fa2"]


def test_bad_mapping_is_a_config_error():
    with pytest.raises(ConfigError, match="block_m"):
        gpu_mapping({"block_m": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        gpu_mapping({"blockm": 64})
    with pytest.raises(ConfigError, match="kernel_style"):
        GpuMapping(kernel_style="volta")
    with pytest.raises(ConfigError, match="now called 'cudnn'"):
        GpuMapping(kernel_style="hopper")


def test_tile_counts_count_causal_and_window_tiles():
    causal = Problem(batch=1, q_heads=1, q_len=1024, kv_len=1024, head_dim=64, causal=True).tile_counts(128, 128)
    assert list(causal.visited) == list(range(1, 9))
    assert causal.partial.sum() == 8 and causal.exact_pairs == 1024 * 1025 / 2
    full = Problem(batch=1, q_heads=1, q_len=1024, kv_len=1024, head_dim=64).tile_counts(128, 128)
    assert full.partial.sum() == 0 and full.exact_pairs == 1024 * 1024
    decode = Problem(batch=1, q_heads=1, q_len=1, kv_len=65536, head_dim=64, causal=True, window=(4096, 0))
    counts = decode.tile_counts(1, 128)
    assert counts.visited[0] in (33, 34) and (counts.kv_lo, counts.kv_hi) == (65535 - 4096, 65536)


def test_the_general_mappings_tiles_carry_over():
    class General:  # the shape of einsim.simulator.mapping.Mapping's tile fields
        key_tile = 64
        query_tile = 64

    plan = gpu_mapping(General())
    assert (plan.block_n, plan.block_m) == (64, 64)
    assert gpu_mapping({"gpu": {"block_n": 32}}).block_n == 32


def test_a_mapping_yaml_file_works(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("gpu:\n  block_m: 64\n  kernel_style: flex\n")
    plan = gpu_mapping(str(path))
    assert (plan.block_m, plan.kernel_style) == (64, "flex")
    path.write_text("key_tile: 32\n")
    assert gpu_mapping(str(path)).block_n == 32


def test_multipass_stats_cross_passes_at_the_intermediate_precision():
    w = layer(1024, heads=4)
    fp32 = simulate_gpu(load_cascade("attention-3pass"), w, H100, {"multipass": "materialize"})
    bf16 = simulate_gpu(load_cascade("attention-3pass"), w, H100, {"multipass": "materialize", "intermediate_bytes": 2})
    scores = 2 * 2 * 4 * 1024 * 1024  # QK and SN, each written once and read once
    assert fp32.traffic_bytes - bf16.traffic_bytes == pytest.approx(2 * scores + 4 * 2 * 4 * 1024)  # GM, SD: write + read
    with pytest.raises(ConfigError, match="intermediate_bytes"):
        GpuMapping(intermediate_bytes=0)


def test_two_pass_recompute_reads_k_again_and_no_v_in_pass_one():
    est = simulate_gpu(load_cascade("attention-2pass"), layer(512, heads=2), H100, {"multipass": "recompute"})
    first, second = est.mapping["hbm_bytes_per_pass"]
    assert set(first["reads"]) == {"Q", "K"} and set(first["writes"]) == {"GM"}
    assert set(second["reads"]) == {"Q", "K", "V", "GM"}
