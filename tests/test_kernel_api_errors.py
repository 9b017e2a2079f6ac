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


def _paged():
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(2, 2, 1, 16, generator=generator).to(DEVICE, torch.float16)
    k_cache, v_cache = (torch.randn(4, 16, 2, 16, generator=generator).to(DEVICE, torch.float16) for _ in range(2))
    lengths = torch.tensor([20, 5], dtype=torch.int32, device=DEVICE)
    table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32, device=DEVICE)
    return q, k_cache, v_cache, lengths, table


@pytest.mark.parametrize("kwargs, message", [
    ({"causal": "no"}, "causal must be True or False, got 'no'"),  # ran a causal mask
    ({"scale": float("inf")}, "scale must be a positive finite number, got inf"),  # a NaN output
    ({"scale": float("nan")}, "scale must be a positive finite number"),
])
def test_paged_decode_options_are_named_errors(kwargs: dict, message: str) -> None:
    from einsim.kernels.decode.forward import decode_paged

    with pytest.raises(ShapeError, match=message):
        decode_paged(*_paged(), **kwargs)


def test_linear_attention_options_are_named_errors() -> None:
    from einsim.kernels.linear.chunk import linear_attention
    from einsim.kernels.linear.decode import linear_attention_decode

    q, k, v = _qkv()
    with pytest.raises(ShapeError, match="output_final_state must be True or False, got 'no'"):
        linear_attention(q, k, v, output_final_state="no")  # returned a state it was told not to
    state = torch.zeros(1, 1, 16, 16, device=DEVICE)
    one = [t[:, :, :1] for t in (q, k, v)]
    for out in (torch.zeros(3, device=DEVICE), torch.zeros(1, 1, 1, 16, device=DEVICE)):  # IndexError before
        with pytest.raises(ShapeError, match=r"out must be a torch.float16 tensor \[B, Hq, 1, Dv\] = \(1, 1, 1, 16\)"):
            linear_attention_decode(*one, state, out=out)


@pytest.mark.parametrize("value", [10**30, -(2**31)])
def test_a_compiled_cascades_symbol_beyond_32_bits_is_a_named_error(value: int, tmp_path, monkeypatch) -> None:
    """window_left=10**30 was an OverflowError from Triton's argument specialisation."""
    monkeypatch.setenv("EINSIM_COMPILE_DIR", str(tmp_path))
    from einsim.kernels import compile as compile_cascade

    q, k, v = _qkv()
    with pytest.raises(ShapeError, match="symbol window_left must be an integer of at most 31 bits"):
        compile_cascade("attention-window")(q, k, v, window_left=value, window_right=0)
