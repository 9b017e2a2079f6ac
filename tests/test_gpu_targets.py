"""GPU targets as the one cost model reads them: the architecture family decides which kernel
styles exist, every memory level of the YAML has a role, and a GPU target's mappings are searched
so that a mapping that cannot run is never a latency."""

from __future__ import annotations

import pytest

from einsim.errors import ConfigError
from einsim.problem import Problem
from einsim.simulator.gpu_cost import gpu_roofs
from einsim.simulator.gpu_cost.roofs import gpu_levels
from einsim.simulator.simulate import simulate
from einsim.targets import load_target

MI300X = load_target("mi300x")
A100 = load_target("a100-80gb")
PROBLEM = Problem(batch=1, q_heads=32, q_len=4096, kv_len=4096, head_dim=128, causal=True)


def test_every_memory_level_has_a_role():
    levels = gpu_levels(MI300X)
    assert [level.name for level in levels["caches"]] == ["l2", "infinity_cache"]
    assert levels["shared_memory"].name == "lds" and levels["llc"].name == "infinity_cache"
    roofs = gpu_roofs(MI300X, "bf16")
    assert roofs.smem_bytes_per_sm == 64 * 1024 and roofs.llc_bytes == 256 * 2**20 and roofs.warp_size == 64
    assert gpu_roofs(load_target("h100-sxm"), "bf16").llc_bytes == 50 * 2**20


def test_the_family_decides_the_default_style_and_refuses_a_foreign_one():
    assert simulate("fusemax", PROBLEM, A100).mapping["kernel_style"] == "fa2"
    assert simulate("fusemax", PROBLEM, "h100-sxm").mapping["kernel_style"] == "cudnn"
    with pytest.raises(ConfigError, match="'cudnn' is a hopper kernel; on ampere use one of fa2"):
        simulate("fusemax", PROBLEM, A100, {"kernel_style": "cudnn"})


def test_tiles_that_cannot_run_on_the_target_are_searched_away():
    estimate = simulate("fusemax", PROBLEM, MI300X, strict=True)  # 64 KiB of LDS: the default tiles do not fit
    assert estimate.fits and estimate.latency_s > 0
    assert estimate.notes[0].startswith("mapping search:") and "fit" in estimate.notes[0]
    smem = estimate.mapping["block_m"] * 128 * 2 + estimate.mapping["num_stages"] * estimate.mapping["block_n"] * 256 * 2
    assert smem <= 64 * 1024


def test_a_mapping_that_cannot_run_is_never_a_latency():
    big = {"block_m": 128, "block_n": 128, "num_stages": 3}
    estimate = simulate("fusemax", PROBLEM, MI300X, big)
    assert not estimate.fits and estimate.latency_s == float("inf")
    with pytest.raises(ConfigError, match="cannot launch.*shared memory"):
        simulate("fusemax", PROBLEM, MI300X, big, strict=True)


def test_a_search_is_never_slower_than_the_style_s_own_tiles():
    own = simulate("fusemax", PROBLEM, "h200", {"kernel_style": "einsim"})
    searched = simulate("fusemax", PROBLEM, "h200", {"kernel_style": "einsim", "search": True})
    assert searched.latency_s <= own.latency_s
    assert searched.notes[0].startswith("mapping search:")


def test_a_filter_s_empty_tiles_are_skipped_on_a_gpu():
    """issue 13: a sinks + window cascade was priced like full causal attention."""
    long = Problem(batch=1, q_heads=32, q_len=16384, kv_len=16384, head_dim=128, causal=True)
    causal = simulate("fusemax", long, "h100-sxm")
    sinks = simulate("sinks-window", long, "h100-sxm")
    assert sinks.latency_s < 0.2 * causal.latency_s
    assert sinks.traffic_by_level["l2"] < 0.2 * causal.traffic_by_level["l2"]
    assert sinks.compute_ops["mac"] < 0.1 * causal.compute_ops["mac"]
    prefix = simulate("prefix-lm", Problem(batch=1, q_heads=32, q_len=16384, kv_len=16384, head_dim=128), "h100-sxm")
    full = simulate("fusemax", Problem(batch=1, q_heads=32, q_len=16384, kv_len=16384, head_dim=128), "h100-sxm")
    assert causal.compute_ops["mac"] <= prefix.compute_ops["mac"] < full.compute_ops["mac"]
