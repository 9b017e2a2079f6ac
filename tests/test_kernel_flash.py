"""The fused forward (`attention-fwd`) and its backward (`attention-bwd`) against the float64
oracle: outputs, lse and gradients for every option (causal, window, GQA, q_len != kv_len,
padded head dims, fp16/bf16, any strides, TMA and pointer loads, both dQ modes), poisoned
outputs, and bad input rejected before any launch. On CPU they run in Triton's interpreter at
tiny shapes; with a GPU (and no TRITON_INTERPRET) compiled, plus real sizes marked `gpu`."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from einsim.einsum_cascades.reference import attention_reference, attention_reference_torch  # noqa: E402
from einsim.errors import ConfigError, ShapeError  # noqa: E402
from einsim.kernels import KERNELS, attention  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.kernels.flash.backward import flash_backward  # noqa: E402
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig  # noqa: E402
from einsim.kernels.flash.forward import flash_forward  # noqa: E402
from einsim.kernels.runtime import interpreting  # noqa: E402

DEVICE = "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# Small tiles keep the interpreter fast and still give several tiles per row and column.
FORWARD = FlashConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2)
WIDE = FlashConfig(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)
BACKWARD = FlashBackwardConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_M_DQ=32, BLOCK_N_DQ=16,
                               num_warps=4, num_stages=2)
FORWARD_TOLERANCE = {"fp16": 4e-3, "bf16": 2e-2}  # absolute, outputs are O(1)
GRADIENT_TOLERANCE = {"fp16": 1e-2, "bf16": 5e-2}  # relative to the largest gradient entry


def make_qkv(batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype, seed=0, v_head_dim=None):
    generator = torch.Generator().manual_seed(seed)
    shapes = ((batch, q_heads, q_len, head_dim), (batch, kv_heads, kv_len, head_dim),
              (batch, kv_heads, kv_len, v_head_dim or head_dim))
    return [torch.randn(s, generator=generator).to(DTYPES[dtype]).to(DEVICE) for s in shapes]


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def reference_with_grads(q, k, v, do, *, causal=False, window=None, scale=None):
    """The oracle's formula in torch float64 (attention_reference_torch), differentiated by
    autograd; its forward is checked against attention_reference itself on every call."""
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_(True) for t in (q, k, v))
    out, _ = attention_reference_torch(q64, k64, v64, causal=causal, window=window, scale=scale)
    oracle_out, _ = attention_reference(*(t.detach().numpy() for t in (q64, k64, v64)),
                                        scale=scale, causal=causal, window=window)
    np.testing.assert_allclose(out.detach().numpy(), oracle_out, atol=1e-12)
    grads = torch.autograd.grad(out, (q64, k64, v64), do.detach().cpu().double())
    return out.detach(), grads


def assert_forward_matches(out, lse, q, k, v, *, causal=False, window=None, scale=None):
    assert not torch.isnan(out).any(), "output elements left unwritten (poison survived)"
    assert not torch.isnan(lse).any(), "lse elements left unwritten (poison survived)"
    ref_out, ref_lse = attention_reference(*(t.double().cpu().numpy() for t in (q, k, v)),
                                           scale=scale, causal=causal, window=window)
    dtype = "bf16" if q.dtype == torch.bfloat16 else "fp16"
    np.testing.assert_allclose(out.double().cpu().numpy(), ref_out,
                               atol=FORWARD_TOLERANCE[dtype], rtol=0)
    lse = lse.double().cpu().numpy()
    assert np.array_equal(np.isneginf(lse), np.isneginf(ref_lse)), "rows that see no key differ"
    finite = np.isfinite(ref_lse)
    np.testing.assert_allclose(lse[finite], ref_lse[finite], atol=1e-3, rtol=0)


def assert_gradients_match(grads, ref_grads, dtype):
    for name, got, want in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert not torch.isnan(got).any(), f"{name} has unwritten (NaN) elements"
        error = (got.double().cpu() - want).abs().max().item()
        scale = max(want.abs().max().item(), 1e-6)
        assert error / scale <= GRADIENT_TOLERANCE[dtype], f"{name}: relative error {error / scale:.3g}"


# (batch, q_heads, kv_heads, q_len, kv_len, head_dim, causal, window, dtype, config)
FORWARD_CASES = {
    "length-1": (1, 2, 2, 1, 1, 16, False, None, "fp16", FORWARD),
    "17-causal-bf16": (2, 2, 2, 17, 17, 32, True, None, "bf16", FORWARD),
    "300-causal-gqa4": (1, 4, 1, 300, 300, 16, True, None, "fp16", WIDE),
    "300-full-bf16": (1, 1, 1, 300, 300, 16, False, None, "bf16", WIDE),
    "q-shorter-d80": (1, 2, 2, 20, 33, 80, True, None, "bf16", FORWARD),
    "q-longer-empty-rows": (1, 2, 2, 40, 9, 16, True, None, "fp16", FORWARD),
    "d96-window-smaller-than-block": (1, 2, 1, 33, 20, 96, False, (3, 2), "fp16", FORWARD),
    "sliding-window-causal": (2, 2, 2, 50, 50, 16, True, (7, 0), "bf16", FORWARD),
    "window-only-left-of-queries": (1, 1, 1, 9, 40, 16, False, (30, 0), "fp16", FORWARD),
    "gqa4-bf16-decode-row": (1, 8, 2, 1, 37, 16, True, None, "bf16", FORWARD),
    "batch1-d256": (1, 1, 1, 18, 18, 256, True, None, "fp16", FlashConfig(16, 16, 4, 1)),
    "half-exponentials-on-fma": (1, 2, 2, 70, 90, 64, True, None, "bf16",
                                 FlashConfig(16, 32, 4, 2, exp_split=2)),
    "quarter-exponentials-on-fma": (1, 2, 2, 70, 90, 64, False, None, "fp16",
                                    FlashConfig(16, 32, 4, 2, exp_split=4)),
}


@pytest.mark.parametrize("case", list(FORWARD_CASES), ids=list(FORWARD_CASES))
def test_forward_equals_oracle(case):
    batch, hq, hkv, nq, nk, d, causal, window, dtype, config = FORWARD_CASES[case]
    q, k, v = make_qkv(batch, hq, hkv, nq, nk, d, dtype)
    out, lse = poisoned((batch, hq, nq, d), q.dtype), poisoned((batch, hq, nq), torch.float32)
    flash_forward(q, k, v, causal=causal, window=window, config=config, out=out, lse=lse)
    assert_forward_matches(out, lse, q, k, v, causal=causal, window=window)


@pytest.mark.parametrize("tma", [True, False], ids=["descriptors", "pointers"])
def test_forward_takes_any_strides(tma):
    # q from a [B, N, H, D] buffer (the usual projection layout), k a slice of a wider buffer
    # (rows not 16-byte aligned: descriptors cannot address it, pointer loads must), v transposed.
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(2, 19, 3, 32, generator=generator).to(torch.float16).to(DEVICE).transpose(1, 2)
    k = torch.randn(2, 3, 19, 37, generator=generator).to(torch.float16).to(DEVICE)[..., 2:34]
    v = torch.randn(2, 3, 32, 19, generator=generator).to(torch.float16).to(DEVICE).transpose(2, 3)
    config = dataclasses.replace(FORWARD, tma=tma)
    out, lse = poisoned((2, 3, 19, 32), torch.float16), poisoned((2, 3, 19), torch.float32)
    flash_forward(q, k, v, causal=True, config=config, out=out, lse=lse)
    assert_forward_matches(out, lse, q, k, v, causal=True)


def test_forward_explicit_scale_and_value_dim():
    q, k, _ = make_qkv(1, 2, 2, 17, 23, 32, "fp16")
    v = make_qkv(1, 2, 2, 17, 23, 64, "fp16", seed=1)[2]
    out, lse = flash_forward(q, k, v, scale=0.3, config=FORWARD)
    assert out.shape == (1, 2, 17, 64)
    assert_forward_matches(out, lse, q, k, v, scale=0.3)


# (batch, q_heads, kv_heads, q_len, kv_len, head_dim, causal, window, dtype)
BACKWARD_CASES = {
    "17-full-fp16": (1, 2, 2, 17, 17, 16, False, None, "fp16"),
    "gqa4-causal-d80-bf16": (1, 4, 1, 40, 33, 80, True, None, "bf16"),
    "window-smaller-than-block": (1, 2, 2, 40, 40, 32, False, (5, 3), "fp16"),
    "q-longer-empty-rows": (2, 2, 1, 37, 5, 16, True, None, "fp16"),
    "sliding-window-gqa2-bf16": (1, 4, 2, 50, 61, 16, True, (9, 0), "bf16"),
}


DQ_MODES = {"dq-kernel": dict(), "dq-reduce-add": dict(dq_atomic=True),
            "one-launch": dict(one_launch=True)}


@pytest.mark.parametrize("dq_mode", list(DQ_MODES), ids=list(DQ_MODES))
@pytest.mark.parametrize("case", list(BACKWARD_CASES), ids=list(BACKWARD_CASES))
def test_gradients_equal_oracle(case, dq_mode):
    batch, hq, hkv, nq, nk, d, causal, window, dtype = BACKWARD_CASES[case]
    q, k, v = make_qkv(batch, hq, hkv, nq, nk, d, dtype)
    do = make_qkv(batch, hq, hkv, nq, nk, d, dtype, seed=7)[0]
    out, lse = flash_forward(q, k, v, causal=causal, window=window, config=FORWARD)
    grads = [poisoned(t.shape, t.dtype) for t in (q, k, v)]
    config = dataclasses.replace(BACKWARD, **DQ_MODES[dq_mode])
    flash_backward(do, q, k, v, out, lse, causal=causal, window=window, config=config,
                   dq=grads[0], dk=grads[1], dv=grads[2])
    _, ref_grads = reference_with_grads(q, k, v, do, causal=causal, window=window)
    assert_gradients_match(grads, ref_grads, dtype)


def test_attention_is_a_drop_in_autograd_function():
    q, k, v = (t.requires_grad_(True) for t in make_qkv(1, 4, 2, 21, 21, 16, "fp16"))
    out, lse = attention(q, k, v, causal=True, config=FORWARD, backward_config=BACKWARD,
                         return_lse=True)
    assert out.requires_grad and not lse.requires_grad
    (out.float() ** 2).sum().backward()  # a real loss, not a hand-made dO
    ref_out, ref_grads = reference_with_grads(q, k, v, 2 * out.detach().float(), causal=True)
    np.testing.assert_allclose(out.detach().double().cpu().numpy(), ref_out.numpy(), atol=4e-3)
    assert_gradients_match([q.grad, k.grad, v.grad], ref_grads, "fp16")


def test_broadcast_output_gradient_is_accepted():
    q, k, v = (t.requires_grad_(True) for t in make_qkv(1, 2, 2, 9, 9, 16, "bf16"))
    attention(q, k, v, config=FORWARD, backward_config=BACKWARD).sum().backward()  # dO strides 0
    assert all(torch.isfinite(t.grad.float()).all() for t in (q, k, v))


def test_registry_launchers_run_forward_and_backward():
    problem = Problem(batch=1, q_heads=2, kv_heads=1, q_len=17, kv_len=17, head_dim=16, causal=True, dtype="fp16")
    forward, backward = KERNELS["attention-fwd"], KERNELS["attention-bwd"]
    inputs = forward.make_inputs(problem, device=DEVICE, seed=0)
    out, lse = forward.launch(FORWARD, inputs)
    assert_forward_matches(out, lse, inputs["q"], inputs["k"], inputs["v"], causal=True)
    inputs = backward.make_inputs(problem, device=DEVICE, seed=0)
    inputs["forward_config"] = FORWARD
    dq, dk, dv = backward.launch(BACKWARD, inputs)
    _, ref = reference_with_grads(inputs["q"], inputs["k"], inputs["v"], inputs["do"], causal=True)
    assert_gradients_match([dq, dk, dv], ref, "fp16")


# -- bad input: a clear einsim error before any launch -----------------------------------------
def test_wrong_dtype_is_rejected():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16, "fp16")
    with pytest.raises(ShapeError, match="dtype"):
        flash_forward(q.float(), k.float(), v.float())
    with pytest.raises(ShapeError, match="dtypes differ"):
        flash_forward(q, k.to(torch.bfloat16), v)


def test_tensors_on_different_devices_are_rejected():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16, "fp16")
    with pytest.raises(ShapeError, match="different devices"):
        flash_forward(q, k.to("meta"), v)


@pytest.mark.parametrize("shapes, message", [
    (((1, 3, 8, 16), (1, 2, 8, 16), (1, 2, 8, 16)), "multiple of key/value heads"),
    (((1, 2, 8, 16), (1, 2, 8, 32), (1, 2, 8, 16)), "head dims differ"),
    (((1, 2, 8, 16), (1, 2, 8, 16), (1, 2, 9, 16)), "same heads and length"),
    (((2, 2, 8, 16), (1, 2, 8, 16), (1, 2, 8, 16)), "batch sizes differ"),
    (((1, 2, 8, 8), (1, 2, 8, 8), (1, 2, 8, 8)), "16..256"),
    (((1, 2, 8, 320), (1, 2, 8, 320), (1, 2, 8, 320)), "16..256"),
    (((2, 8, 16), (2, 8, 16), (2, 8, 16)), "4-D"),
    (((1, 2, 0, 16), (1, 2, 8, 16), (1, 2, 8, 16)), "empty"),
])
def test_mismatched_shapes_are_rejected(shapes, message):
    q, k, v = (torch.zeros(s, dtype=torch.float16, device=DEVICE) for s in shapes)
    with pytest.raises(ShapeError, match=message):
        flash_forward(q, k, v)


def test_bad_options_are_rejected():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16, "fp16")
    with pytest.raises(ShapeError, match="window"):
        flash_forward(q, k, v, window=(-1, 0))
    with pytest.raises(ShapeError, match="scale"):
        flash_forward(q, k, v, scale=-1.0)


def test_config_that_overflows_shared_memory_is_rejected_before_launch():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 256, "fp16")
    out = poisoned((1, 2, 8, 256), torch.float16)
    with pytest.raises(ConfigError, match="shared memory"):
        flash_forward(q, k, v, config=FlashConfig(BLOCK_M=128, BLOCK_N=128, num_warps=16,
                                                  num_stages=4), out=out)
    assert torch.isnan(out).all(), "nothing may run when the config is rejected"


def test_config_of_the_wrong_kernel_is_rejected():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16, "fp16")
    with pytest.raises(ConfigError, match="FlashConfig"):
        flash_forward(q, k, v, config=BACKWARD)


def test_gradient_of_the_wrong_shape_is_rejected():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16, "fp16")
    out, lse = flash_forward(q, k, v, config=FORWARD)
    with pytest.raises(ShapeError, match="grad_out"):
        flash_backward(out[:, :, :4], q, k, v, out, lse, config=BACKWARD)


def test_cpu_tensors_without_the_interpreter_are_rejected(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = (torch.zeros(1, 2, 8, 16, dtype=torch.float16) for _ in range(3))
    with pytest.raises(ShapeError, match="CUDA"):
        flash_forward(q, k, v)


# -- real sizes, on the GPU only ---------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 80, 128])
def test_real_sizes_on_the_gpu(head_dim, causal):
    q, k, v = make_qkv(2, 8, 2, 1500, 2048, head_dim, "bf16")
    do = make_qkv(2, 8, 2, 1500, 2048, head_dim, "bf16", seed=5)[0]
    out, lse = poisoned(q.shape, q.dtype), poisoned(q.shape[:3], torch.float32)
    flash_forward(q, k, v, causal=causal, out=out, lse=lse)
    assert_forward_matches(out, lse, q, k, v, causal=causal)
    ref_q, ref_k, ref_v = (t.detach().float().requires_grad_(True) for t in (q, k, v))
    ref, _ = attention_reference_torch(ref_q, ref_k, ref_v, causal=causal, dtype=torch.float32)
    ref_grads = torch.autograd.grad(ref, (ref_q, ref_k, ref_v), do.float())
    for mode in DQ_MODES.values():
        config = dataclasses.replace(KERNELS["attention-bwd"].default_config(
            Problem(batch=2, q_heads=8, kv_heads=2, q_len=1500, kv_len=2048, head_dim=head_dim, causal=causal)), **mode)
        grads = flash_backward(do, q, k, v, out, lse, causal=causal, config=config)
        assert_gradients_match(grads, [g.double().cpu() for g in ref_grads], "bf16")
