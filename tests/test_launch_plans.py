"""Launch plans (einsim.kernels.launch): a call of a known shape reuses its plan (no checks, no
config resolution, no file-system access), a new stride or option builds a new one, and a
compiled kernel is launched straight through its C launcher with the current stream."""

from __future__ import annotations

import builtins
import os
import pathlib

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from einsim.errors import ConfigError, ShapeError  # noqa: E402
from einsim.kernels import launch  # noqa: E402
from einsim.kernels.decode.forward import decode_attention  # noqa: E402
from einsim.kernels.flash import backward, forward  # noqa: E402
from einsim.kernels.flash.config import FlashConfig  # noqa: E402

from test_kernel_flash import assert_forward_matches, make_qkv  # noqa: E402

SMALL = FlashConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)


@pytest.fixture
def no_file_system(monkeypatch):
    """After this fixture is entered, opening or stat-ing any file fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"file-system access in the hot path: {args[:1]}")

    def arm():
        monkeypatch.setattr(builtins, "open", refuse)
        monkeypatch.setattr(pathlib.Path, "stat", refuse)
        monkeypatch.setattr(os, "stat", refuse)
    return arm


def test_second_call_reuses_the_plan_without_checks_or_file_access(monkeypatch, no_file_system):
    launch.clear_plans()
    q, k, v = make_qkv(1, 2, 1, 19, 19, 16, "fp16")
    out, lse = forward.flash_forward(q, k, v, causal=True)  # default config, tuned-cache lookup
    assert forward.PLANS.misses == 1 and forward.PLANS.hits == 0

    def no_checks(*args, **kwargs):
        raise AssertionError("inputs checked again on a plan hit")

    monkeypatch.setattr(forward, "check_attention_inputs", no_checks)
    monkeypatch.setattr(forward, "resolve_config", no_checks)
    no_file_system()
    q2, k2, v2 = make_qkv(1, 2, 1, 19, 19, 16, "fp16", seed=5)
    out2, lse2 = forward.flash_forward(q2, k2, v2, causal=True)
    monkeypatch.undo()
    assert forward.PLANS.hits == 1 and forward.PLANS.misses == 1
    assert_forward_matches(out2, lse2, q2, k2, v2, causal=True)


def test_new_strides_or_options_build_a_new_plan():
    launch.clear_plans()
    q, k, v = make_qkv(1, 2, 2, 17, 17, 16, "fp16")
    forward.flash_forward(q, k, v, config=SMALL)
    transposed = q.transpose(1, 2).contiguous().transpose(1, 2)  # same shape, other strides
    out, lse = forward.flash_forward(transposed, k, v, config=SMALL)
    assert_forward_matches(out, lse, transposed, k, v)
    out, lse = forward.flash_forward(q, k, v, config=SMALL, causal=True)
    assert_forward_matches(out, lse, q, k, v, causal=True)
    assert forward.PLANS.misses == 3 and forward.PLANS.hits == 0


def test_bad_input_raises_on_every_call_not_only_the_first():
    q, k, v = make_qkv(1, 2, 2, 9, 9, 16, "fp16")
    for _ in range(2):
        with pytest.raises(ShapeError, match="dtype"):
            forward.flash_forward(q.float(), k.float(), v.float())
        with pytest.raises(ShapeError, match="must be a torch.Tensor"):
            forward.flash_forward("q", k, v)
        with pytest.raises(ConfigError):
            forward.flash_forward(q, k, v, config={"BLOCK_M": 16})


def test_backward_and_decode_reuse_their_plans():
    launch.clear_plans()
    q, k, v = make_qkv(1, 2, 1, 9, 9, 16, "fp16")
    out, lse = forward.flash_forward(q, k, v, config=SMALL)
    do = torch.randn_like(out)
    first = backward.flash_backward(do, q, k, v, out, lse)
    second = backward.flash_backward(do, q, k, v, out, lse)
    assert backward.PLANS.hits == 1 and backward.PLANS.misses == 1
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    from einsim.kernels.decode import forward as decode_forward

    q1 = q[:, :, :1]
    decode_attention(q1, k, v)
    decode_attention(q1, k, v)
    assert decode_forward.PLANS.hits == 1


class _StubCompiled:
    """What Triton's CompiledKernel offers the launcher: run, function, packed_metadata."""

    function = "fn"
    packed_metadata = "meta"

    def __init__(self) -> None:
        self.calls = []

    def run(self, *args):
        self.calls.append(args)


class _StubKernel:
    arg_names = ["X", "n", "Y", "BLOCK"]

    def __init__(self) -> None:
        self.compiled = _StubCompiled()
        self.jit_calls = []

    def __getitem__(self, grid):
        def launch_(*args, **options):
            self.jit_calls.append((grid, args, options))
            return self.compiled
        return launch_


class _StubDriver:
    def get_current_device(self):
        return 3

    def get_current_stream(self, device):
        return 1000 + device


def test_compiled_kernel_is_launched_directly_after_the_first_call(monkeypatch):
    from triton.runtime import driver

    monkeypatch.setattr(driver, "_active", _StubDriver())
    kernel = _StubKernel()
    x, y = torch.zeros(4), torch.ones(4)
    run = launch.TritonLaunch(kernel, (2,), x, 7, y, BLOCK=16, num_warps=2, num_stages=1)
    assert run.tensor_slots == (0, 2) and run.template == [None, 7, None, 16]
    run(x, y)  # first call: through kernel[grid], keeps the compiled kernel
    assert len(kernel.jit_calls) == 1 and kernel.jit_calls[0][2] == dict(num_warps=2, num_stages=1)
    assert run.fast
    x2, y2 = torch.zeros(4), torch.ones(4)
    run(x2, y2)
    assert len(kernel.jit_calls) == 1
    (call,) = kernel.compiled.calls
    assert call[:6] == (2, 1, 1, 1003, "fn", "meta")
    assert call[9] is x2 and call[10] == 7 and call[11] is y2 and call[12] == 16


def test_a_launch_must_name_every_kernel_parameter():
    with pytest.raises(ConfigError, match="missing \\['BLOCK'\\]"):
        launch.TritonLaunch(_StubKernel(), (1,), torch.zeros(1), 1, torch.zeros(1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_take_the_direct_launch_on_this_triton():
    launch.clear_plans()
    q, k, v = make_qkv(1, 2, 1, 300, 300, 64, "bf16")
    forward.flash_forward(q, k, v, causal=True)
    out, lse = forward.flash_forward(q, k, v, causal=True)
    (plan,) = forward.PLANS._plans.values()
    assert plan.launch.fast, f"Triton {triton.__version__}: direct launch unavailable"
    assert_forward_matches(out, lse, q, k, v, causal=True)
