"""The tuned-config store (einsim.kernels.tuned): written by `einsim autotune`, read by the
launchers through KernelSpec.resolve_config, by exact problem or shape bucket and GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from einsim.errors import EinsimWarning
from einsim.kernels import tuned
from einsim.kernels.limits import DeviceLimits
from einsim.kernels.registry import get_kernel
from einsim.kernels.tuned import export_best, shape_bucket, tuned_config
from einsim.problem import Problem

DECODE = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)
SPEC = get_kernel("decode")


def test_round_trip_by_bucket_and_gpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path))
    default = SPEC.default_config(DECODE)
    config = next(c for c in reversed(SPEC.search_space(DECODE)) if c != default)
    path = export_best("decode", DECODE, "NVIDIA H100 80GB HBM3", config, measured_s=1e-4,
                       storage="postgresql+psycopg2://einsim:secret@db/tuning")
    data = json.loads(path.read_text())
    assert data["entries"][0]["bucket"] == shape_bucket(DECODE)
    assert "secret" not in path.read_text()
    assert tuned_config(SPEC, DECODE, "NVIDIA H100 80GB HBM3") == config
    assert tuned_config(SPEC, DECODE, "h100-sxm") == config  # same family
    nearby = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=7000, head_dim=128)  # same power-of-two bucket
    assert tuned_config(SPEC, nearby, "NVIDIA H100 80GB HBM3") == config
    assert tuned_config(SPEC, DECODE, "NVIDIA A100-SXM4-80GB") is None
    assert tuned_config(SPEC, Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=100_000, head_dim=128), "h100") is None
    # Exporting the same bucket again replaces the entry.
    export_best("decode", DECODE, "NVIDIA H100 80GB HBM3", default, measured_s=9e-5)
    assert len(json.loads(path.read_text())["entries"]) == 1
    assert tuned_config(SPEC, DECODE, "NVIDIA H100 80GB HBM3") == default


def test_unreadable_files_are_ignored(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path))
    (tmp_path / "decode.json").write_text("{not json")
    with pytest.warns(EinsimWarning, match="not a tuning-cache file"):
        assert tuned_config(SPEC, DECODE, "h100") is None


def test_the_caller_hands_the_lookup_to_resolve_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path))
    limits = DeviceLimits.h100()
    default = SPEC.default_config(DECODE)
    other = next(c for c in SPEC.search_space(DECODE) if c != default)
    seen = []

    def lookup(spec, problem, gpu):
        seen.append((spec.name, problem, gpu))
        return other

    assert SPEC.resolve_config(None, DECODE, limits, lookup=lookup) == other
    assert seen == [("decode", DECODE, limits.name)]
    assert SPEC.resolve_config(None, DECODE, limits, lookup=None) == default
    # a looked-up config that cannot run here is passed over for the default
    too_big = SPEC.config_type(**{**default.__dict__, "BLOCK_N": 4096})
    assert SPEC.resolve_config(None, DECODE, limits, lookup=lambda *_: too_big) == default


def test_shipped_h200_configs_are_used_by_default_on_an_h200(tmp_path: Path, monkeypatch) -> None:
    """kernels/tuned/ ships configs tuned on the H200 by `einsim autotune --model ... --all-shapes`
    (with their GPU, date, versions and measured times); a launcher on an H200 (a fake device
    name here) resolves them with no cache of its own; another GPU family keeps the default."""
    import dataclasses

    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path))  # the user's caches: empty
    tuned.reload()
    shipped = sorted(tuned.TUNED_DIR.glob("*.json"))
    assert shipped, "kernels/tuned/ holds the H200's tuned configs"
    h200 = dataclasses.replace(DeviceLimits.h100(), name="NVIDIA H200")
    a100 = dataclasses.replace(DeviceLimits.h100(), name="NVIDIA A100-SXM4-80GB")
    checked = 0
    for path in shipped:
        data = json.loads(path.read_text())
        spec = get_kernel(data["kernel"])
        for entry in data["entries"]:
            assert entry["gpu"] == "h200" and entry["measured_s"] > 0 and entry["default_s"] > 0
            assert entry["provenance"]["torch"] and entry["provenance"]["triton"] and entry["tuned_at"]
            problem = Problem.from_dict(entry["problem"])
            assert tuned.shape_bucket(problem) == entry["bucket"]
            config = spec.resolve_config(None, problem, h200)
            assert dataclasses.asdict(config) == entry["config"]
            assert spec.resolve_config(None, problem, a100) == spec.default_config(problem)
            checked += 1
    assert checked
    tuned.reload()
