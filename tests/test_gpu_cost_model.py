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
    'engine': {'load_latency_s': 4.9756e-08, 'hbm_extra_latency_s': 7.8824e-07, 'latency_softness': 1.0},
    'triton': {'mma_sync_ratio': 0.58212, 'wgmma_n_exponent': 0.27104},
    'registers': {'base': 33.704, 'per_accumulator': 1.0893, 'per_score': 0.9127, 'per_key': 0.87167},
    'gemm': {'mma_efficiency': 0.96757, 'program_latency_s': 4.3433e-15, 'hbm_efficiency': 0.68679},
    'elementwise': {'strided_efficiency': 0.30357},
    'styles': {
        'cudnn': {'mma_efficiency': 1.0, 'softmax_overlap': 0.42285, 'extra_fma_per_score': 3.5385, 'mask_fma_per_score': 5.5195, 'program_latency_s': 3.7203e-07, 'bwd_mma_efficiency': 0.79353, 'bwd_fma_per_score': 28.227, 'bwd_program_latency_s': 9.9526e-06},
        'fa2': {'mma_efficiency': 0.60815, 'softmax_overlap': 0.0001893, 'extra_fma_per_score': 4.0245, 'mask_fma_per_score': 4.1234, 'program_latency_s': 2.5404e-06, 'bwd_mma_efficiency': 0.45538, 'bwd_fma_per_score': 9.3529, 'bwd_program_latency_s': 2.4634e-05},
        'flex': {'mma_efficiency': 0.83916, 'softmax_overlap': 0.11383, 'extra_fma_per_score': 3.547e-08, 'mask_fma_per_score': 13.122, 'program_latency_s': 2.7106e-06, 'bwd_mma_efficiency': 1.0, 'bwd_fma_per_score': 17.651, 'bwd_program_latency_s': 3.2875e-06},
        'einsim': {'mma_efficiency': 0.65454, 'softmax_overlap': 0.99999, 'extra_fma_per_score': 0.017679, 'mask_fma_per_score': 2.3365e-14, 'program_latency_s': 3.9028e-06, 'bwd_mma_efficiency': 0.7741, 'bwd_fma_per_score': 14.52, 'bwd_program_latency_s': 5.1691e-06},
        'einsim-multipass': {'mma_efficiency': 0.69976, 'softmax_overlap': 1.0, 'extra_fma_per_score': 1.0881, 'mask_fma_per_score': 38.8, 'program_latency_s': 1.6554e-12, 'bwd_mma_efficiency': 0.7741, 'bwd_fma_per_score': 14.52, 'bwd_program_latency_s': 5.1691e-06},
        'einsim-decode': {'mma_efficiency': 0.65454, 'softmax_overlap': 0.99999, 'extra_fma_per_score': 0.017679, 'mask_fma_per_score': 2.3365e-14, 'program_latency_s': 4.3977e-07, 'bwd_mma_efficiency': 0.7741, 'bwd_fma_per_score': 14.52, 'bwd_program_latency_s': 5.1691e-06},
    },
}
ERRORS = {  # (file, style, kind, part) -> (rows, mean |error|, max |error|)
    ('h100-peers.csv', 'cudnn', 'backward', 'fit'): (8, 0.0279, 0.0446),
    ('h100-peers.csv', 'cudnn', 'decode', 'fit'): (3, 0.0336, 0.0546),
    ('h100-peers.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0350, 0.0800),
    ('h100-peers.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0314, 0.0486),
    ('h100-peers.csv', 'fa2', 'backward', 'fit'): (8, 0.0288, 0.0910),
    ('h100-peers.csv', 'fa2', 'decode', 'fit'): (3, 0.1376, 0.1589),
    ('h100-peers.csv', 'fa2', 'prefill', 'fit'): (12, 0.0240, 0.0571),
    ('h100-peers.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0254, 0.0486),
    ('h100-peers.csv', 'flex', 'backward', 'fit'): (8, 0.0266, 0.0713),
    ('h100-peers.csv', 'flex', 'prefill', 'fit'): (12, 0.0338, 0.0742),
    ('h100-peers.csv', 'flex', 'prefill', 'held-out'): (8, 0.0429, 0.1025),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'fit'): (116, 0.1108, 0.5712),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'held-out'): (75, 0.1355, 0.3343),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'fit'): (12, 0.0267, 0.0735),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'held-out'): (8, 0.0287, 0.0666),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0266, 0.0718),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0424, 0.1143),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'fit'): (12, 0.0395, 0.2005),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'held-out'): (8, 0.0276, 0.0646),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'fit'): (12, 0.0351, 0.0710),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'held-out'): (8, 0.0390, 0.0997),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'fit'): (12, 0.0323, 0.0869),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'held-out'): (8, 0.0252, 0.0691),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'fit'): (12, 0.0193, 0.0410),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0196, 0.0365),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'fit'): (12, 0.0238, 0.0511),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'held-out'): (8, 0.0239, 0.0560),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'fit'): (12, 0.0400, 0.0911),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'held-out'): (8, 0.0367, 0.0905),
    ('h100_ours_multipass_decode.csv', 'einsim-decode', 'decode', 'fit'): (5, 0.0212, 0.0393),
    ('h100_ours_multipass_decode.csv', 'einsim-multipass', 'prefill', 'fit'): (20, 0.1078, 0.3079),
    ('h200-peers.csv', 'cudnn', 'backward', 'fit'): (4, 0.0277, 0.0509),
    ('h200-peers.csv', 'cudnn', 'backward', 'held-out'): (4, 0.0625, 0.0917),
    ('h200-peers.csv', 'cudnn', 'decode', 'fit'): (4, 0.0307, 0.0759),
    ('h200-peers.csv', 'cudnn', 'prefill', 'fit'): (5, 0.0537, 0.1525),
    ('h200-peers.csv', 'cudnn', 'prefill', 'held-out'): (4, 0.0342, 0.0618),
    ('h200-peers.csv', 'einsim', 'backward', 'fit'): (4, 0.0175, 0.0350),
    ('h200-peers.csv', 'einsim', 'backward', 'held-out'): (4, 0.0525, 0.0648),
    ('h200-peers.csv', 'einsim', 'prefill', 'fit'): (5, 0.0309, 0.0802),
    ('h200-peers.csv', 'einsim', 'prefill', 'held-out'): (4, 0.0687, 0.0930),
    ('h200-peers.csv', 'einsim-decode', 'decode', 'fit'): (4, 0.0375, 0.0607),
    ('h200-peers.csv', 'fa2', 'backward', 'fit'): (4, 0.0384, 0.0725),
    ('h200-peers.csv', 'fa2', 'backward', 'held-out'): (4, 0.0626, 0.1001),
    ('h200-peers.csv', 'fa2', 'decode', 'fit'): (4, 0.2327, 0.3051),
    ('h200-peers.csv', 'fa2', 'prefill', 'fit'): (5, 0.0260, 0.0327),
    ('h200-peers.csv', 'fa2', 'prefill', 'held-out'): (4, 0.0217, 0.0468),
    ('h200-peers.csv', 'flex', 'backward', 'fit'): (4, 0.0119, 0.0221),
    ('h200-peers.csv', 'flex', 'backward', 'held-out'): (4, 0.0648, 0.0894),
    ('h200-peers.csv', 'flex', 'prefill', 'fit'): (5, 0.0471, 0.0694),
    ('h200-peers.csv', 'flex', 'prefill', 'held-out'): (4, 0.0477, 0.0838),
    ('h200_attention.csv', 'cudnn', 'backward', 'fit'): (24, 0.0628, 0.1942),
    ('h200_attention.csv', 'cudnn', 'backward', 'held-out'): (8, 0.0854, 0.1193),
    ('h200_attention.csv', 'cudnn', 'prefill', 'fit'): (24, 0.0573, 0.1385),
    ('h200_attention.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0827, 0.1324),
    ('h200_attention.csv', 'einsim', 'backward', 'fit'): (24, 0.0333, 0.0743),
    ('h200_attention.csv', 'einsim', 'backward', 'held-out'): (8, 0.0352, 0.0647),
    ('h200_attention.csv', 'einsim', 'prefill', 'fit'): (24, 0.0576, 0.1559),
    ('h200_attention.csv', 'einsim', 'prefill', 'held-out'): (8, 0.0486, 0.0842),
    ('h200_attention.csv', 'fa2', 'backward', 'fit'): (24, 0.0771, 0.1990),
    ('h200_attention.csv', 'fa2', 'backward', 'held-out'): (8, 0.0274, 0.0674),
    ('h200_attention.csv', 'fa2', 'prefill', 'fit'): (24, 0.0481, 0.1252),
    ('h200_attention.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0206, 0.0371),
    ('h200_attention.csv', 'flex', 'prefill', 'fit'): (8, 0.0654, 0.1353),
    ('h200_attention_w5.csv', 'cudnn', 'backward', 'held-out'): (12, 0.0851, 0.1341),
    ('h200_attention_w5.csv', 'cudnn', 'prefill', 'held-out'): (12, 0.0701, 0.1392),
    ('h200_attention_w5.csv', 'einsim', 'backward', 'held-out'): (12, 0.0561, 0.0939),
    ('h200_attention_w5.csv', 'einsim', 'prefill', 'held-out'): (12, 0.0532, 0.0976),
    ('h200_attention_w5.csv', 'fa2', 'backward', 'held-out'): (12, 0.0443, 0.0868),
    ('h200_attention_w5.csv', 'fa2', 'prefill', 'held-out'): (12, 0.0418, 0.1240),
}
LAYER_ERRORS = {  # (what, part) -> (rows, mean |error|) of whole layers, h200_layer.csv
    ('layer', 'fit'): (6, 0.0380),
    ('layer', 'held-out'): (2, 0.0524),
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
    return {key: (len(v), sum(v) / len(v), max(v)) for key, v in found.items()}


def test_the_model_error_on_every_data_file_is_pinned(errors):
    assert set(errors) == set(ERRORS)
    for key, (rows, mean, worst) in ERRORS.items():
        got_rows, got_mean, got_worst = errors[key]
        assert got_rows == rows, key
        assert got_mean == pytest.approx(mean, abs=0.002), f"{key}: mean |error| {got_mean:.2%}, pinned {mean:.2%}"
        assert got_worst == pytest.approx(worst, abs=0.002), f"{key}: max |error| {got_worst:.2%}, pinned {worst:.2%}"


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
    assert held and all(m.problem.q_len in (2048, 8192) or m.problem.kv_len in (2048, 8192)
                        or m.source in data.VALIDATION_FILES for m in held)  # measured after the fit
    assert all(m.held_out for m in rows if m.source in data.VALIDATION_FILES)
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
