"""Pins the GPU model's error against measured H100 times (../shared/anchors/h100-peers.csv, measured
by others): a change to the model that makes it worse than docs/validation.md reports fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from einsim.simulator.gpu_validation import compare, summary

ANCHORS = Path(__file__).resolve().parents[1].parent / "shared" / "anchors" / "h100-peers.csv"

# (kind, backend) -> (mean |error| bound, max |error| bound): what docs/validation.md reports
# (§ GPU targets: predicted vs measured), rounded up by about two points.
BOUNDS = {
    ("prefill", "sdpa_cudnn"): (0.06, 0.12),
    ("prefill", "sdpa_flash"): (0.09, 0.16),
    ("prefill", "flex"): (0.12, 0.33),
    ("decode", "sdpa_cudnn"): (0.05, 0.06),
    ("decode", "sdpa_flash"): (0.15, 0.18),
}

pytestmark = pytest.mark.skipif(not ANCHORS.is_file(), reason=f"anchors not found at {ANCHORS}")


@pytest.fixture(scope="module")
def comparisons():
    return compare(ANCHORS)


def test_every_forward_anchor_is_predicted(comparisons):
    assert len(comparisons) == 66  # 20 prefill rows for each of 3 backends, 3 decode rows for 2
    assert {c.style for c in comparisons} == {"hopper", "triton", "ampere"}


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_gpu_model_error_stays_within_the_reported_bound(comparisons, key):
    stats = summary(comparisons)[key]
    mean_bound, max_bound = BOUNDS[key]
    assert stats["mean_abs"] <= mean_bound, f"{key}: mean |error| {stats['mean_abs']:.1%} > {mean_bound:.0%}"
    assert stats["max_abs"] <= max_bound, f"{key}: max |error| {stats['max_abs']:.1%} > {max_bound:.0%}"


def test_the_model_ranks_backends_as_measured(comparisons):
    """cuDNN (hopper style) < flex (triton) < sdpa flash (ampere) on every non-causal D=128 prefill."""
    by_shape: dict = {}
    for c in comparisons:
        if c.kind == "prefill" and c.problem.head_dim == 128 and not c.problem.causal:
            by_shape.setdefault(c.problem.kv_len, {})[c.backend] = c
    for shape in by_shape.values():
        for attr in ("measured_ms", "predicted_ms"):
            assert getattr(shape["sdpa_cudnn"], attr) < getattr(shape["flex"], attr) < getattr(shape["sdpa_flash"], attr)


def test_decode_is_predicted_bandwidth_bound(comparisons):
    assert all(c.bound == "hbm" for c in comparisons if c.kind == "decode")


OURS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "h100_ours_multipass_decode.csv"
# (kernel, mapping) -> (mean |error|, max |error|) of the model on einsim's own kernels, as
# docs/validation.md § GPU targets reports them, rounded up by about two points
OURS_BOUNDS = {
    ("attention-2pass", "recompute"): (0.27, 0.38),
    ("attention-2pass", "materialize"): (0.27, 0.32),
    ("attention-3pass", "recompute"): (0.10, 0.21),
    ("attention-3pass", "materialize"): (0.10, 0.12),
    ("decode", "split"): (0.04, 0.06),
}


def test_gpu_model_error_on_our_multipass_and_decode_kernels():
    import importlib.util

    spec = importlib.util.spec_from_file_location("validate_gpu_model", OURS.parents[1] / "validate_gpu_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    groups: dict = {}
    for row in module.ours_rows(OURS):
        groups.setdefault((row["kernel"], row["mapping"]), []).append(abs(row["error"]))
    assert set(groups) == set(OURS_BOUNDS)
    for key, errors in groups.items():
        mean_bound, max_bound = OURS_BOUNDS[key]
        assert sum(errors) / len(errors) <= mean_bound and max(errors) <= max_bound, (key, errors)
