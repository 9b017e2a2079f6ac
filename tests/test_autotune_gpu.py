"""A real tuning run on a CUDA GPU: every trial compiles, is checked against the reference and is
timed; the winner goes to the tuning cache and the launcher picks it up. Skipped without a GPU
(the device tool runs it: `PYTHONPATH=. python -m pytest -q -m gpu tests/test_autotune_gpu.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("optuna")

from einsim.autotune import tune  # noqa: E402
from einsim.kernels.tuned import export_best  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.kernels.limits import DeviceLimits  # noqa: E402
from einsim.kernels.registry import get_kernel  # noqa: E402


@pytest.mark.parametrize("kernel, problem", [
    ("attention-fwd", Problem(batch=2, q_heads=8, kv_heads=8, q_len=1024, kv_len=1024, head_dim=64, causal=True)),
    ("decode", Problem(batch=4, q_heads=16, kv_heads=4, q_len=1, kv_len=4096, head_dim=128)),
])
def test_tuning_on_the_gpu_times_checked_configs_and_feeds_the_launcher(kernel, problem, tmp_path: Path,
                                                                         monkeypatch) -> None:
    monkeypatch.setenv("EINSIM_TUNED_DIR", str(tmp_path / "tuned"))
    result = tune(kernel, problem, "h100-sxm", trials=4, storage=f"sqlite:///{tmp_path / 'tuning.db'}", seed=0)
    assert len(result.evaluated) == 4
    assert result.best is not None and 0 < result.best.measured_s < 1.0
    assert all(t.failure_kind != "wrong_output" for t in result.trials)
    spec = get_kernel(kernel)
    config = spec.config_type(**result.best.config)
    export_best(kernel, problem, result.gpu, config, measured_s=result.best.measured_s)
    limits = DeviceLimits.from_torch_device()
    assert spec.resolve_config(None, problem, limits) == config
