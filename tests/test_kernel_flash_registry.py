"""The kernel registry, Problem and the flash kernels' resource models: torch-free,
honest work counts, and configs that cannot run rejected by reason."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

from einsim.einsum_cascades.reference import visible_keys
from einsim.errors import ConfigError, ShapeError
from einsim.kernels import tuned as tuned_store
from einsim.kernels.flash import config as flash
from einsim.problem import Problem
from einsim.kernels.limits import DeviceLimits
from einsim.kernels.registry import KERNELS, get_kernel


def test_importing_the_registry_needs_neither_torch_nor_triton():
    code = ("import sys, einsim.kernels, einsim.kernels.registry, einsim.cli.kernels;"
            "from einsim.kernels import KERNELS;"
            "assert KERNELS['attention-fwd'].search_space(einsim.problem.Problem(batch="
            "1, q_heads=2, kv_heads=2, q_len=64, kv_len=64, head_dim=64));"
            "bad = [m for m in ('torch', 'triton') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_kernel_of_the_issue_is_registered_with_its_cascade():
    assert KERNELS["attention-fwd"].cascade == "fusemax"
    assert KERNELS["attention-bwd"].cascade == "fusemax"
    assert KERNELS["attention-bwd"].direction == "backward"
    for name in ("attention-fwd", "attention-bwd"):
        spec = KERNELS[name]
        assert spec.launcher.partition(":")[2], "launcher must be module:function"
    with pytest.raises(ConfigError, match="unknown kernel"):
        get_kernel("attention-4pass")


HEAD_DIMS = (16, 24, 32, 48, 64, 80, 96, 128, 160, 256)


@pytest.mark.parametrize("name", ["attention-fwd", "attention-bwd"])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_default_configs_fit_every_supported_head_dim(name, head_dim):
    spec = KERNELS[name]
    for causal in (False, True):
        for dtype in ("bf16", "fp16"):
            problem = Problem(batch=2, q_heads=8, kv_heads=2, q_len=1000, kv_len=1000, head_dim=head_dim, causal=causal, dtype=dtype)
            config = spec.default_config(problem)
            assert spec.config_reasons(config, problem, DeviceLimits.h100()) == []
            space = spec.search_space(problem)
            assert space and all(not spec.check_config(c, problem) for c in space)


# Measured on an H100 (triton 3.6, kernel metadata `shared`), docs/performance.md v1.
COMPILED_SHARED_MEMORY = [
    (flash.FlashConfig(128, 128, 8, 3), 128, 230400),
    (flash.FlashConfig(128, 64, 8, 3), 128, 132096),
    (flash.FlashConfig(128, 64, 4, 3), 64, 66560),
    (flash.FlashConfig(128, 128, 8, 2), 64, 82944),
    (flash.FlashConfig(64, 64, 4, 3), 128, 115712),
]


@pytest.mark.parametrize("config, head_dim, measured", COMPILED_SHARED_MEMORY)
def test_shared_memory_model_matches_the_compiled_kernels(config, head_dim, measured):
    problem = Problem(batch=1, q_heads=16, kv_heads=16, q_len=16384, kv_len=16384, head_dim=head_dim)
    assert flash.shared_memory_bytes(config, problem) == measured


def test_backward_shared_memory_model_is_within_one_kib_of_the_compiled_kernels():
    problem = Problem(batch=1, q_heads=16, kv_heads=16, q_len=16384, kv_len=16384, head_dim=128)
    # dK/dV 131600, dQ 131088 bytes on the H100 for this config.
    config = flash.FlashBackwardConfig(64, 128, 128, 64, 8, 2)
    assert abs(flash.backward_shared_memory_bytes(config, problem) - 131600) <= 1024


def test_config_that_overflows_shared_memory_is_rejected():
    problem = Problem(batch=1, q_heads=16, kv_heads=16, q_len=4096, kv_len=4096, head_dim=128)
    too_big = flash.FlashConfig(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=4)
    reasons = flash.check_config(too_big, problem, DeviceLimits.h100())
    assert any("shared memory" in r for r in reasons)
    small_device = DeviceLimits(name="small", shared_memory_per_block=48 * 1024)
    assert flash.check_config(flash.FlashConfig(128, 64, 8, 3), problem, small_device)
    with pytest.raises(ConfigError, match="shared memory"):
        KERNELS["attention-fwd"].validate(too_big, problem)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_kernel_refuses_a_dtype_it_cannot_load(name):
    spec = KERNELS[name]
    problem = Problem(batch=1, q_heads=2, q_len=64, kv_len=64, head_dim=64, dtype="fp32")
    config = spec.default_config(Problem(batch=1, q_heads=2, q_len=64, kv_len=64, head_dim=64))
    assert any("dtype fp32" in reason for reason in spec.config_reasons(config, problem))


def test_configs_outside_the_knobs_ranges_are_rejected_with_reasons():
    problem = Problem(batch=1, q_heads=2, kv_heads=2, q_len=64, kv_len=64, head_dim=64)
    reasons = flash.check_config(flash.FlashConfig(BLOCK_M=96, BLOCK_N=64, num_warps=3,
                                                   num_stages=9), problem)
    assert len(reasons) == 3
    assert flash.check_config(flash.FlashConfig(128, 64, 4, 3, warp_specialize=True), problem)
    assert KERNELS["attention-fwd"].config_reasons(flash.FlashBackwardConfig(), problem)


@pytest.mark.parametrize("q_len, kv_len, causal, window", [
    (17, 17, False, None), (17, 17, True, None), (40, 9, True, None), (9, 40, True, None),
    (50, 50, True, (7, 0)), (33, 20, False, (3, 2)), (1, 64, True, None), (30, 30, False, (0, 0)),
])
def test_visible_pairs_and_tile_ranges_agree_with_the_oracle_mask(q_len, kv_len, causal, window):
    problem = Problem(batch=1, q_heads=1, kv_heads=1, q_len=q_len, kv_len=kv_len, head_dim=16, causal=causal, window=window)
    mask = visible_keys(q_len, kv_len, causal, window)
    assert problem.visible_pairs() == int(mask.sum())
    for block_m, block_n in ((16, 16), (8, 32)):
        tiles = 0
        for start in range(0, q_len, block_m):
            lo, hi = problem.tile_key_range(start, block_m, block_n)
            assert lo % block_n == 0
            rows = mask[start:start + block_m]
            visible_columns = np.flatnonzero(rows.any(axis=0))
            if visible_columns.size:
                assert lo <= visible_columns.min() and visible_columns.max() < hi
            tiles += -(-(hi - lo) // block_n)
        assert problem.visited_tiles(block_m, block_n) == tiles
    lo, hi = problem.visible_key_span()
    columns = np.flatnonzero(mask.any(axis=0))
    assert (lo, hi) == ((columns.min(), columns.max() + 1) if columns.size else (0, 0))


def test_flops_count_visible_work_only():
    full = Problem(batch=1, q_heads=16, kv_heads=16, q_len=16384, kv_len=16384, head_dim=128)
    causal = Problem(batch=1, q_heads=16, kv_heads=16, q_len=16384, kv_len=16384, head_dim=128, causal=True)
    assert full.forward_flops() == 4 * 16384 * 16384 * 128 * 16
    assert causal.forward_flops() / full.forward_flops() == pytest.approx(0.5, abs=1e-4)
    assert full.backward_flops() == 2.5 * full.forward_flops()
    window = Problem(batch=1, q_heads=1, kv_heads=1, q_len=1024, kv_len=1024, head_dim=64, causal=True, window=(127, 0))
    assert window.forward_flops() < full.forward_flops() / 16 / 7
    assert KERNELS["attention-bwd"].flops(full) == full.backward_flops()
    assert full.forward_min_bytes() == 2 * 4 * 16384 * 128 * 16 + 4 * 16384 * 16


@pytest.mark.parametrize("fields, message", [
    (dict(q_heads=3, kv_heads=2), "multiple of kv_heads"),
    (dict(q_len=0), "q_len"),
    (dict(head_dim=64.0), "head_dim"),
    (dict(window=(3, -1)), "window"),
    (dict(window=(3,)), "window"),
    (dict(dtype="int4"), "dtype"),
    (dict(causal="yes"), "causal"),
])
def test_attention_problem_rejects_bad_shapes(fields, message):
    base = dict(batch=1, q_heads=4, kv_heads=2, q_len=8, kv_len=8, head_dim=64)
    with pytest.raises(ShapeError, match=message):
        Problem(**{**base, **fields})


def test_device_limits_of_an_h100():
    h100 = DeviceLimits.h100()
    assert h100.sm_count == 132
    assert h100.shared_memory_per_block == 227 * 1024
    assert h100.shared_memory_per_sm == 228 * 1024


def test_tuned_configs_are_read_from_the_cache(tmp_path, monkeypatch):
    problem = Problem(batch=2, q_heads=8, kv_heads=8, q_len=4096, kv_len=4096, head_dim=128, causal=True)
    tuned = flash.FlashConfig(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=4)
    entry = {"device": "NVIDIA H100 80GB HBM3", "problem": problem.to_dict(), "config": asdict(tuned)}
    (tmp_path / "attention-fwd.json").write_text(json.dumps({"kernel": "attention-fwd",
                                                             "entries": [entry]}))
    monkeypatch.setattr(tuned_store, "TUNED_DIR", tmp_path)  # the shipped kernels/tuned/
    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path / "user"))  # no user cache
    spec = KERNELS["attention-fwd"]
    assert spec.resolve_config(None, problem) == tuned
    other = Problem(batch=2, q_heads=8, kv_heads=8, q_len=4096, kv_len=4096, head_dim=128, causal=False)
    assert spec.resolve_config(None, other) == spec.default_config(other)
    explicit = flash.FlashConfig(128, 64, 8, 3)
    assert spec.resolve_config(explicit, problem) == explicit


def test_host_bound_backward_defaults_to_one_launch():
    """Below HOST_BOUND_FLOPS the host sets the pace: attention-bwd's default runs dK/dV and dQ
    in one grid (a launch fewer per call); above it, two launches as tuned. The compiled
    cascades' default (no one-launch grid) is unchanged."""
    tiny = Problem(batch=1, q_heads=1, kv_heads=1, q_len=128, kv_len=128, head_dim=64)
    large = Problem(batch=4, q_heads=32, kv_heads=8, q_len=8192, kv_len=8192, head_dim=128, causal=True)
    spec = get_kernel("attention-bwd")
    assert tiny.backward_flops() < flash.HOST_BOUND_FLOPS < large.backward_flops()
    assert spec.default_config(tiny).one_launch and not spec.default_config(large).one_launch
    assert not flash.backward_default_config(tiny).one_launch
