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
    'engine': {'load_latency_s': 2.4294e-07, 'hbm_extra_latency_s': 7.5655e-07, 'latency_softness': 1.8603},
    'triton': {'mma_sync_ratio': 0.54958, 'wgmma_n_exponent': 0.28745},
    'registers': {'base': 33.704, 'per_accumulator': 1.0893, 'per_score': 0.9127, 'per_key': 0.87167},
    'styles': {
        'cudnn': {'mma_efficiency': 0.88293, 'softmax_overlap': 0.66697, 'extra_fma_per_score': 4.6238, 'mask_fma_per_score': 7.4709, 'program_latency_s': 1.2638e-07, 'bwd_mma_efficiency': 0.74306, 'bwd_fma_per_score': 33.204},
        'fa2': {'mma_efficiency': 0.62465, 'softmax_overlap': 0.015982, 'extra_fma_per_score': 5.0439, 'mask_fma_per_score': 0.46486, 'program_latency_s': 4.0871e-06, 'bwd_mma_efficiency': 0.47069, 'bwd_fma_per_score': 24.591},
        'flex': {'mma_efficiency': 0.77258, 'softmax_overlap': 0.45345, 'extra_fma_per_score': 3.2257, 'mask_fma_per_score': 21.405, 'program_latency_s': 1.9474e-06, 'bwd_mma_efficiency': 0.87618, 'bwd_fma_per_score': 19.347},
        'einsim': {'mma_efficiency': 0.63615, 'softmax_overlap': 0.99573, 'extra_fma_per_score': 0.15364, 'mask_fma_per_score': 37.886, 'program_latency_s': 1.532e-06, 'bwd_mma_efficiency': 0.74674, 'bwd_fma_per_score': 15.946},
        'einsim-multipass': {'mma_efficiency': 0.70186, 'softmax_overlap': 0.97571, 'extra_fma_per_score': 0.24726, 'mask_fma_per_score': 34.382, 'program_latency_s': 1.4613e-07, 'bwd_mma_efficiency': 0.74674, 'bwd_fma_per_score': 15.946},
        'einsim-decode': {'mma_efficiency': 0.63615, 'softmax_overlap': 0.99573, 'extra_fma_per_score': 0.15364, 'mask_fma_per_score': 37.886, 'program_latency_s': 4.3977e-07, 'bwd_mma_efficiency': 0.74674, 'bwd_fma_per_score': 15.946},
    },
}
ERRORS = {  # (file, style, kind, part) -> (rows, mean |error|)
    ('h100-peers.csv', 'cudnn', 'backward', 'fit'): (8, 0.0299),
    ('h100-peers.csv', 'cudnn', 'decode', 'fit'): (3, 0.0313),
    ('h100-peers.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0436),
    ('h100-peers.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0411),
    ('h100-peers.csv', 'fa2', 'backward', 'fit'): (8, 0.0520),
    ('h100-peers.csv', 'fa2', 'decode', 'fit'): (3, 0.1334),
    ('h100-peers.csv', 'fa2', 'prefill', 'fit'): (12, 0.0359),
    ('h100-peers.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0305),
    ('h100-peers.csv', 'flex', 'backward', 'fit'): (8, 0.0245),
    ('h100-peers.csv', 'flex', 'prefill', 'fit'): (12, 0.0330),
    ('h100-peers.csv', 'flex', 'prefill', 'held-out'): (8, 0.0438),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'fit'): (116, 0.1247),
    ('h100_autotune_configs.csv', 'einsim configs', 'config', 'held-out'): (75, 0.1571),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'fit'): (12, 0.0379),
    ('h100_kernels_v4.csv', 'cudnn', 'backward', 'held-out'): (8, 0.0225),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'fit'): (12, 0.0320),
    ('h100_kernels_v4.csv', 'cudnn', 'prefill', 'held-out'): (8, 0.0496),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'fit'): (12, 0.0554),
    ('h100_kernels_v4.csv', 'einsim', 'backward', 'held-out'): (8, 0.0352),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'fit'): (12, 0.0983),
    ('h100_kernels_v4.csv', 'einsim', 'prefill', 'held-out'): (8, 0.0953),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'fit'): (12, 0.0720),
    ('h100_kernels_v4.csv', 'fa2', 'backward', 'held-out'): (8, 0.0516),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'fit'): (12, 0.0313),
    ('h100_kernels_v4.csv', 'fa2', 'prefill', 'held-out'): (8, 0.0291),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'fit'): (12, 0.0234),
    ('h100_kernels_v4.csv', 'flex', 'backward', 'held-out'): (8, 0.0271),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'fit'): (12, 0.0391),
    ('h100_kernels_v4.csv', 'flex', 'prefill', 'held-out'): (8, 0.0379),
    ('h100_ours_multipass_decode.csv', 'einsim-decode', 'decode', 'fit'): (5, 0.0264),
    ('h100_ours_multipass_decode.csv', 'einsim-multipass', 'prefill', 'fit'): (20, 0.1074),
    ('h200-peers.csv', 'cudnn', 'backward', 'fit'): (4, 0.0248),
    ('h200-peers.csv', 'cudnn', 'backward', 'held-out'): (4, 0.1039),
    ('h200-peers.csv', 'cudnn', 'decode', 'fit'): (4, 0.0466),
    ('h200-peers.csv', 'cudnn', 'prefill', 'fit'): (5, 0.0575),
    ('h200-peers.csv', 'cudnn', 'prefill', 'held-out'): (4, 0.0323),
    ('h200-peers.csv', 'einsim', 'backward', 'fit'): (4, 0.0185),
    ('h200-peers.csv', 'einsim', 'backward', 'held-out'): (4, 0.0599),
    ('h200-peers.csv', 'einsim', 'prefill', 'fit'): (5, 0.0808),
    ('h200-peers.csv', 'einsim', 'prefill', 'held-out'): (4, 0.1136),
    ('h200-peers.csv', 'einsim-decode', 'decode', 'fit'): (4, 0.0375),
    ('h200-peers.csv', 'fa2', 'backward', 'fit'): (4, 0.0347),
    ('h200-peers.csv', 'fa2', 'backward', 'held-out'): (4, 0.1285),
    ('h200-peers.csv', 'fa2', 'decode', 'fit'): (4, 0.2259),
    ('h200-peers.csv', 'fa2', 'prefill', 'fit'): (5, 0.0283),
    ('h200-peers.csv', 'fa2', 'prefill', 'held-out'): (4, 0.0364),
    ('h200-peers.csv', 'flex', 'backward', 'fit'): (4, 0.0126),
    ('h200-peers.csv', 'flex', 'backward', 'held-out'): (4, 0.0666),
    ('h200-peers.csv', 'flex', 'prefill', 'fit'): (5, 0.0442),
    ('h200-peers.csv', 'flex', 'prefill', 'held-out'): (4, 0.0465),
}
# fmt: on


def test_every_fitted_number_is_pinned():
    document = yaml.safe_load(FITTED_FILE.read_text())
    for section in ("engine", "triton", "registers"):
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
