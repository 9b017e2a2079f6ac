"""Pins the one GPU cost model to the measurements it was fitted to: every fitted number of
simulator/gpu_cost/fitted.yaml (a 10 % change of any fails here), the model's mean error on every
file of benchmarks/data (fitted and held-out rows apart, so a change that makes it worse — or
better without a refit — fails here), and the fit's bookkeeping (data hashes, held-out rows).
Refit with `python benchmarks/fit_gpu_model.py`: it rewrites the tables below too (`--pins` alone
rewrites them from the committed fitted.yaml)."""

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
    'engine': {'load_latency_s': 5.9889e-08, 'hbm_extra_latency_s': 7.7054e-07, 'latency_softness': 1.0004},
    'triton': {'mma_sync_ratio': 0.584, 'wgmma_n_exponent': 0.27383},
    'registers': {'base': 33.704, 'per_accumulator': 1.0893, 'per_score': 0.9127, 'per_key': 0.87167},
    'gemm': {'mma_efficiency': 0.97177, 'program_latency_s': 3.6771e-20, 'hbm_efficiency': 0.68675},
    'elementwise': {'strided_efficiency': 0.30309},
    'styles': {
        'cudnn': {'mma_efficiency': 1.0336, 'softmax_overlap': 0.35989, 'extra_fma_per_score': 3.3352, 'mask_fma_per_score': 5.3974, 'program_latency_s': 3.7362e-07, 'bwd_mma_efficiency': 0.80262, 'bwd_fma_per_score': 27.687, 'bwd_program_latency_s': 9.9444e-06},
        'fa2': {'mma_efficiency': 0.61175, 'softmax_overlap': 0.0058506, 'extra_fma_per_score': 4.2618, 'mask_fma_per_score': 3.723, 'program_latency_s': 2.5576e-06, 'bwd_mma_efficiency': 0.45535, 'bwd_fma_per_score': 9.1929, 'bwd_program_latency_s': 2.5121e-05},
        'flex': {'mma_efficiency': 0.879, 'softmax_overlap': 0.0011785, 'extra_fma_per_score': 0.0039523, 'mask_fma_per_score': 12.331, 'program_latency_s': 2.7099e-06, 'bwd_mma_efficiency': 1.058, 'bwd_fma_per_score': 17.324, 'bwd_program_latency_s': 3.4033e-06},
        'einsim': {'mma_efficiency': 0.65604, 'softmax_overlap': 0.99985, 'extra_fma_per_score': 0.017713, 'mask_fma_per_score': 2.1121e-12, 'program_latency_s': 3.8843e-06, 'bwd_mma_efficiency': 0.77647, 'bwd_fma_per_score': 14.281, 'bwd_program_latency_s': 5.382e-06},
        'einsim-multipass': {'mma_efficiency': 0.7048, 'softmax_overlap': 0.99984, 'extra_fma_per_score': 1.0263, 'mask_fma_per_score': 38.553, 'program_latency_s': 1.2132e-14, 'bwd_mma_efficiency': 0.77647, 'bwd_fma_per_score': 14.281, 'bwd_program_latency_s': 5.382e-06},
        'einsim-decode': {'mma_efficiency': 0.65604, 'softmax_overlap': 0.99985, 'extra_fma_per_score': 0.017713, 'mask_fma_per_score': 2.1121e-12, 'program_latency_s': 4.3977e-07, 'bwd_mma_efficiency': 0.77647, 'bwd_fma_per_score': 14.281, 'bwd_program_latency_s': 5.382e-06},
    },
}
ERRORS = {  # (file, style, kind, part) -> (rows, mean |error|)
    ('h100-peers.csv', 'cudnn', 'backward', 'fit'): (8, 0.0280),
    ('h100-peers.csv', 'cudnn', 'decode', 'fit'): (3, 0.0336),
    ('h100-peers.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0344),
    ('h100-peers.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0306),
    ('h100-peers.csv', 'fa2', 'backward', 'fit'): (8, 0.0281),
    ('h100-peers.csv', 'fa2', 'decode', 'fit'): (3, 0.1376),
    ('h100-peers.csv', 'fa2', 'prefill', 'fit'): (12, 0.0245),
    ('h100-peers.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0263),
    ('h100-peers.csv', 'flex', 'backward', 'fit'): (8, 0.0272),
    ('h100-peers.csv', 'flex', 'prefill', 'fit'): (12, 0.0347),
    ('h100-peers.csv', 'flex', 'prefill', 'held-out'): (8, 0.0447),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'fit'): (116, 0.1114),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'held-out'): (75, 0.1349),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'fit'): (12, 0.0266),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'held-out'): (8, 0.0288),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0261),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0416),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'fit'): (12, 0.0401),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'held-out'): (8, 0.0285),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'fit'): (12, 0.0352),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'held-out'): (8, 0.0390),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'fit'): (12, 0.0329),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'held-out'): (8, 0.0260),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'fit'): (12, 0.0196),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0204),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'fit'): (12, 0.0228),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'held-out'): (8, 0.0227),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'fit'): (12, 0.0400),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'held-out'): (8, 0.0382),
    ('h100_ours_multipass_decode.csv', 'einsim-decode', 'decode', 'fit'): (5, 0.0212),
    ('h100_ours_multipass_decode.csv', 'einsim-multipass', 'prefill', 'fit'): (20, 0.1079),
    ('h200-peers.csv', 'cudnn', 'backward', 'fit'): (4, 0.0278),
    ('h200-peers.csv', 'cudnn', 'backward', 'held-out'): (4, 0.0627),
    ('h200-peers.csv', 'cudnn', 'decode', 'fit'): (4, 0.0346),
    ('h200-peers.csv', 'cudnn', 'prefill', 'fit'): (5, 0.0529),
    ('h200-peers.csv', 'cudnn', 'prefill', 'held-out'): (4, 0.0331),
    ('h200-peers.csv', 'einsim', 'backward', 'fit'): (4, 0.0171),
    ('h200-peers.csv', 'einsim', 'backward', 'held-out'): (4, 0.0491),
    ('h200-peers.csv', 'einsim', 'prefill', 'fit'): (5, 0.0305),
    ('h200-peers.csv', 'einsim', 'prefill', 'held-out'): (4, 0.0693),
    ('h200-peers.csv', 'einsim-decode', 'decode', 'fit'): (4, 0.0374),
    ('h200-peers.csv', 'fa2', 'backward', 'fit'): (4, 0.0385),
    ('h200-peers.csv', 'fa2', 'backward', 'held-out'): (4, 0.0604),
    ('h200-peers.csv', 'fa2', 'decode', 'fit'): (4, 0.2317),
    ('h200-peers.csv', 'fa2', 'prefill', 'fit'): (5, 0.0263),
    ('h200-peers.csv', 'fa2', 'prefill', 'held-out'): (4, 0.0225),
    ('h200-peers.csv', 'flex', 'backward', 'fit'): (4, 0.0128),
    ('h200-peers.csv', 'flex', 'backward', 'held-out'): (4, 0.0636),
    ('h200-peers.csv', 'flex', 'prefill', 'fit'): (5, 0.0453),
    ('h200-peers.csv', 'flex', 'prefill', 'held-out'): (4, 0.0494),
    ('h200_attention.csv', 'cudnn', 'backward', 'fit'): (24, 0.0643),
    ('h200_attention.csv', 'cudnn', 'backward', 'held-out'): (8, 0.0852),
    ('h200_attention.csv', 'cudnn', 'prefill', 'fit'): (24, 0.0558),
    ('h200_attention.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0813),
    ('h200_attention.csv', 'einsim', 'backward', 'fit'): (24, 0.0308),
    ('h200_attention.csv', 'einsim', 'backward', 'held-out'): (8, 0.0371),
    ('h200_attention.csv', 'einsim', 'prefill', 'fit'): (24, 0.0578),
    ('h200_attention.csv', 'einsim', 'prefill', 'held-out'): (8, 0.0493),
    ('h200_attention.csv', 'fa2', 'backward', 'fit'): (24, 0.0782),
    ('h200_attention.csv', 'fa2', 'backward', 'held-out'): (8, 0.0281),
    ('h200_attention.csv', 'fa2', 'prefill', 'fit'): (24, 0.0484),
    ('h200_attention.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0210),
    ('h200_attention.csv', 'flex', 'prefill', 'fit'): (8, 0.0652),
}
LAYER_ERRORS = {  # (what, part) -> (rows, mean |error|) of whole layers, h200_layer.csv
    ('layer', 'fit'): (6, 0.0386),
    ('layer', 'held-out'): (2, 0.0526),
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
