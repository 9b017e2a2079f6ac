"""The kernel front door (einsim.kernels.attention) refuses arguments that used to run wrongly:
scale=inf (all-NaN output), causal='no' (truthy: a causal mask), window=(1.5, 0) (truncated)."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from einsim.errors import ShapeError  # noqa: E402
from einsim.kernels import attention  # noqa: E402
from einsim.kernels.decode.forward import decode_attention  # noqa: E402
from einsim.kernels.flash.forward import flash_forward  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _qkv():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(1, 1, 4, 16, generator=generator).to(DEVICE, torch.float16) for _ in range(3)]


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": float("inf")}, "scale must be a positive finite number, got inf"),
    ({"scale": float("nan")}, "scale must be a positive finite number"),
    ({"scale": -1.0}, "scale must be a positive finite number"),
    ({"scale": True}, "scale must be a positive finite number"),
    ({"causal": "no"}, "causal must be True or False, got 'no'"),
    ({"causal": 2}, "causal must be True or False"),
    ({"window": (1.5, 0)}, r"window must be \(left, right\), two whole numbers >= 0"),
    ({"window": (-1, 0)}, "two whole numbers >= 0"),
    ({"window": (1, 2, 3)}, "two whole numbers"),
    ({"window": "wide"}, "two whole numbers"),
])
def test_bad_options_are_named_errors_before_any_launch(kwargs: dict, message: str) -> None:
    q, k, v = _qkv()
    for front_door in (attention, flash_forward, decode_attention):  # decode: the shared input check
        with pytest.raises(ShapeError, match=message):
            front_door(q, k, v, **kwargs)


def test_numpy_bools_and_whole_window_values_are_fine() -> None:
    import numpy as np

    q, k, v = _qkv()
    reference = attention(q, k, v, causal=True, window=(2, 0))
    again = attention(q, k, v, causal=np.bool_(True), window=(np.int64(2), 0))
    assert torch.equal(reference, again)
