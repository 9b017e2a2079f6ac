"""Pins the one GPU cost model to the measurements it was fitted to: every fitted number of
simulator/gpu_cost/fitted.yaml (a 10 % change of any fails here), the model's mean error on every
file of benchmarks/data (fitted and held-out rows apart, so a change that makes it worse — or
better without a refit — fails here), and the fit's bookkeeping (data hashes, held-out rows).
Refit with `python benchmarks/fit_gpu_model.py`, then update the two tables below."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from einsim.errors import ConfigError
from einsim.simulator.gpu_cost.styles import FITTED_FILE, read_fitted

REPO = Path(__file__).resolve().parents[1]


def _data_module():
    """benchmarks/gpu_model_data.py (a script folder, not a package), imported once."""
    if "gpu_model_data" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_model_data", REPO / "benchmarks" / "gpu_model_data.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_model_data"] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
    return sys.modules["gpu_model_data"]


# fmt: off
# --- generated from fitted.yaml and the data (see the module docstring) ---
FITTED = {
    'engine': {'load_latency_s': 2.0611e-07, 'hbm_extra_latency_s': 1.3389e-06, 'latency_softness': 1.712},
    'triton': {'mma_sync_ratio': 0.58779, 'wgmma_n_exponent': 0.2883},
    'registers': {'base': 33.704, 'per_accumulator': 1.0893, 'per_score': 0.9127, 'per_key': 0.87167},
    'gemm': {'mma_efficiency': 0.96, 'program_latency_s': 8.1391e-07, 'hbm_efficiency': 0.69046},
    'elementwise': {'strided_efficiency': 0.34136},
    'styles': {
        'cudnn': {'mma_efficiency': 0.96723, 'softmax_overlap': 0.52039, 'extra_fma_per_score': 3.6608, 'mask_fma_per_score': 7.1557, 'program_latency_s': 8.366e-07, 'bwd_mma_efficiency': 0.7501, 'bwd_fma_per_score': 32.332},
        'fa2': {'mma_efficiency': 0.59686, 'softmax_overlap': 0.0018823, 'extra_fma_per_score': 2.0647, 'mask_fma_per_score': 3.179, 'program_latency_s': 4.9686e-06, 'bwd_mma_efficiency': 0.44197, 'bwd_fma_per_score': 22.34},
        'flex': {'mma_efficiency': 0.84168, 'softmax_overlap': 0.095867, 'extra_fma_per_score': 0.17769, 'mask_fma_per_score': 11.737, 'program_latency_s': 2.834e-06, 'bwd_mma_efficiency': 0.99822, 'bwd_fma_per_score': 17.93},
        'einsim': {'mma_efficiency': 0.65856, 'softmax_overlap': 0.99395, 'extra_fma_per_score': 0.018571, 'mask_fma_per_score': 4.7031, 'program_latency_s': 4.1659e-06, 'bwd_mma_efficiency': 0.75336, 'bwd_fma_per_score': 15.139},
        'einsim-multipass': {'mma_efficiency': 0.69371, 'softmax_overlap': 0.99722, 'extra_fma_per_score': 0.56129, 'mask_fma_per_score': 37.301, 'program_latency_s': 1.2378e-08, 'bwd_mma_efficiency': 0.75336, 'bwd_fma_per_score': 15.139},
        'einsim-decode': {'mma_efficiency': 0.65856, 'softmax_overlap': 0.99395, 'extra_fma_per_score': 0.018571, 'mask_fma_per_score': 4.7031, 'program_latency_s': 4.3977e-07, 'bwd_mma_efficiency': 0.75336, 'bwd_fma_per_score': 15.139},
    },
}
ERRORS = {  # (file, style, kind, part) -> (rows, mean |error|)
    ('h100-peers.csv', 'cudnn', 'backward', 'fit'): (8, 0.0291),
    ('h100-peers.csv', 'cudnn', 'decode', 'fit'): (3, 0.0336),
    ('h100-peers.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0381),
    ('h100-peers.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0253),
    ('h100-peers.csv', 'fa2', 'backward', 'fit'): (8, 0.0589),
    ('h100-peers.csv', 'fa2', 'decode', 'fit'): (3, 0.1376),
    ('h100-peers.csv', 'fa2', 'prefill', 'fit'): (12, 0.0403),
    ('h100-peers.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0324),
    ('h100-peers.csv', 'flex', 'backward', 'fit'): (8, 0.0276),
    ('h100-peers.csv', 'flex', 'prefill', 'fit'): (12, 0.0338),
    ('h100-peers.csv', 'flex', 'prefill', 'held-out'): (8, 0.0440),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'fit'): (116, 0.1142),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'held-out'): (75, 0.1400),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'fit'): (12, 0.0422),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'held-out'): (8, 0.0261),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0294),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0377),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'fit'): (12, 0.0421),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'held-out'): (8, 0.0288),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'fit'): (12, 0.0355),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'held-out'): (8, 0.0385),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'fit'): (12, 0.0811),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'held-out'): (8, 0.0537),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'fit'): (12, 0.0342),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0288),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'fit'): (12, 0.0220),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'held-out'): (8, 0.0214),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'fit'): (12, 0.0393),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'held-out'): (8, 0.0374),
    ('h100_ours_multipass_decode.csv', 'einsim-decode', 'decode', 'fit'): (5, 0.0201),
    ('h100_ours_multipass_decode.csv', 'einsim-multipass', 'prefill', 'fit'): (20, 0.1079),
    ('h200-peers.csv', 'cudnn', 'backward', 'fit'): (4, 0.0396),
    ('h200-peers.csv', 'cudnn', 'backward', 'held-out'): (4, 0.0979),
    ('h200-peers.csv', 'cudnn', 'decode', 'fit'): (4, 0.0535),
    ('h200-peers.csv', 'cudnn', 'prefill', 'fit'): (5, 0.0643),
    ('h200-peers.csv', 'cudnn', 'prefill', 'held-out'): (4, 0.0312),
    ('h200-peers.csv', 'einsim', 'backward', 'fit'): (4, 0.0138),
    ('h200-peers.csv', 'einsim', 'backward', 'held-out'): (4, 0.0541),
    ('h200-peers.csv', 'einsim', 'prefill', 'fit'): (5, 0.0292),
    ('h200-peers.csv', 'einsim', 'prefill', 'held-out'): (4, 0.0720),
    ('h200-peers.csv', 'einsim-decode', 'decode', 'fit'): (4, 0.0392),
    ('h200-peers.csv', 'fa2', 'backward', 'fit'): (4, 0.0720),
    ('h200-peers.csv', 'fa2', 'backward', 'held-out'): (4, 0.0977),
    ('h200-peers.csv', 'fa2', 'decode', 'fit'): (4, 0.2205),
    ('h200-peers.csv', 'fa2', 'prefill', 'fit'): (5, 0.0317),
    ('h200-peers.csv', 'fa2', 'prefill', 'held-out'): (4, 0.0355),
    ('h200-peers.csv', 'flex', 'backward', 'fit'): (4, 0.0127),
    ('h200-peers.csv', 'flex', 'backward', 'held-out'): (4, 0.0688),
    ('h200-peers.csv', 'flex', 'prefill', 'fit'): (5, 0.0443),
    ('h200-peers.csv', 'flex', 'prefill', 'held-out'): (4, 0.0482),
    ('h200_attention.csv', 'cudnn', 'backward', 'fit'): (24, 0.1456),
    ('h200_attention.csv', 'cudnn', 'backward', 'held-out'): (8, 0.0812),
    ('h200_attention.csv', 'cudnn', 'prefill', 'fit'): (24, 0.0711),
    ('h200_attention.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0774),
    ('h200_attention.csv', 'einsim', 'backward', 'fit'): (24, 0.0483),
    ('h200_attention.csv', 'einsim', 'backward', 'held-out'): (8, 0.0393),
    ('h200_attention.csv', 'einsim', 'prefill', 'fit'): (24, 0.0624),
    ('h200_attention.csv', 'einsim', 'prefill', 'held-out'): (8, 0.0489),
    ('h200_attention.csv', 'fa2', 'backward', 'fit'): (24, 0.2019),
    ('h200_attention.csv', 'fa2', 'backward', 'held-out'): (8, 0.0468),
    ('h200_attention.csv', 'fa2', 'prefill', 'fit'): (24, 0.0946),
    ('h200_attention.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0292),
    ('h200_attention.csv', 'flex', 'prefill', 'fit'): (8, 0.0632),
}
LAYER_ERRORS = {  # (what, part) -> (rows, mean |error|) of whole layers, h200_layer.csv
    ('layer', 'fit'): (6, 0.0864),
    ('layer', 'held-out'): (2, 0.0474),
}
# fmt: on


def test_every_fitted_number_is_pinned():
    document = yaml.safe_load(FITTED_FILE.read_text())
    for section in ("engine", "triton", "registers", "gemm", "elementwise"):
        assert document[section] == pytest.approx(FITTED[section], rel=1e-9), section
    assert set(document["styles"]) == set(FITTED["styles"])
    for name, values in FITTED["styles"].items():
        assert document["styles"][name] == pytest.approx(values, rel=1e-9), name


@pytest.fixture(scope="module")
def errors():
    data = _data_module()
    rows = data.measurements()
    found: dict = {}
    for m, e in zip(rows, data.errors(rows)):
        key = (m.source, m.style if m.kind != "config" else f"{m.style} configs", m.kind,
               "held-out" if m.held_out else "fit")
        found.setdefault(key, []).append(abs(e))
    return {key: (len(v), sum(v) / len(v)) for key, v in found.items()}


def test_the_model_error_on_every_data_file_is_pinned(errors):
    assert set(errors) == set(ERRORS)
    for key, (rows, mean) in ERRORS.items():
        got_rows, got_mean = errors[key]
        assert got_rows == rows, key
        assert got_mean == pytest.approx(mean, abs=0.002), f"{key}: mean |error| {got_mean:.2%}, pinned {mean:.2%}"


def test_the_layer_error_is_pinned():
    data = _data_module()
    found: dict = {}
    for m in data.h200_layers():
        if m.op == "layer":
            found.setdefault(("layer", "held-out" if m.held_out else "fit"), []).append(
                abs(data.predict_layer(m) / m.measured_s - 1))
    assert set(found) == set(LAYER_ERRORS)
    for key, (rows, mean) in LAYER_ERRORS.items():
        assert len(found[key]) == rows
        assert sum(found[key]) / rows == pytest.approx(mean, abs=0.002), key
        assert max(found[key]) <= 0.15  # the bound: layer times within 15 % of measured


def test_the_fit_names_the_data_it_was_fitted_to():
    provenance = yaml.safe_load(FITTED_FILE.read_text())["provenance"]
    data_dir = REPO / "benchmarks" / "data"
    for name, digest in provenance["data"].items():
        assert hashlib.sha256((data_dir / name).read_bytes()).hexdigest()[:16] == digest, (
            f"benchmarks/data/{name} changed since the fit: rerun benchmarks/fit_gpu_model.py")
    assert provenance["held_out_lengths"] == [2048, 8192]


def test_held_out_rows_never_enter_the_fit():
    data = _data_module()
    rows = data.measurements()
    held = [m for m in rows if m.held_out]
    assert held and all(m.problem.q_len in (2048, 8192) or m.problem.kv_len in (2048, 8192) for m in held)
    # the fit selects exactly the rows that are not held out (fit_gpu_model.main)
    assert "fitted_rows = [m for m in rows if not m.held_out]" in (REPO / "benchmarks" / "fit_gpu_model.py").read_text()


def test_a_damaged_fitted_file_is_a_named_error(tmp_path):
    document = yaml.safe_load(FITTED_FILE.read_text())
    del document["styles"]["cudnn"]["mma_efficiency"]
    path = tmp_path / "fitted.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match="styles.cudnn.*mma_efficiency"):
        read_fitted(path)
    document["styles"]["cudnn"]["mma_efficiency"] = "fast"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match="mma_efficiency: expected a number"):
        read_fitted(path)
