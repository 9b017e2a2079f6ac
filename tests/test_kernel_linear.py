"""The linear-attention kernels (`linear-fwd`, `linear-bwd`, `linear-decode`) against the float64
oracle (einsum_cascades.reference.linear_attention_reference and its torch twin): outputs, final
states and gradients (q, k, v, the initial state) with and without decay and the elu1 feature
map, tails, GQA, padded head dims, segments, stored or recomputed states; the decode step against
the token-by-token recurrence; bad input rejected before any launch. On CPU in Triton's
interpreter at tiny shapes; real sizes on a GPU are marked `gpu`."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from einsim.einsum_cascades.reference import (linear_attention_reference,  # noqa: E402
                                              linear_attention_reference_torch)
from einsim.errors import ConfigError, ShapeError  # noqa: E402
from einsim.kernels import KERNELS  # noqa: E402
from einsim.kernels.linear.chunk import linear_attention, linear_forward  # noqa: E402
from einsim.kernels.linear.config import (LinearBackwardConfig, LinearConfig, LinearDecodeConfig,  # noqa: E402
                                          default_config, lightning_slopes)
from einsim.kernels.linear.decode import linear_attention_decode  # noqa: E402
from einsim.kernels.linear.naive import recurrent_linear_attention  # noqa: E402
from einsim.kernels.runtime import interpreting  # noqa: E402
from einsim.problem import Problem  # noqa: E402

DEVICE = "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# Relative to the largest reference entry: bf16/fp16 operands, fp32 accumulation.
TOLERANCE = {"fp16": 5e-3, "bf16": 3e-2}


def make_inputs(batch, q_heads, kv_heads, length, head_dim, v_head_dim, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = ((batch, q_heads, length, head_dim), (batch, kv_heads, length, head_dim),
              (batch, kv_heads, length, v_head_dim))
    return [torch.randn(s, generator=generator).to(DTYPES[dtype]).to(DEVICE) for s in shapes]


def relative_error(got, want) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()


def slopes(heads):
    return torch.tensor(lightning_slopes(heads), dtype=torch.float32, device=DEVICE)


# case: (batch, q_heads, kv_heads, length, head_dim, v_head_dim, dtype, decay, feature_map, config)
FORWARD_CASES = {
    "one-token": (1, 2, 2, 1, 16, 16, "fp16", True, None, LinearConfig(CHUNK=16, BLOCK_C=16)),
    "tail-67-d64-decay": (1, 2, 2, 67, 64, 64, "bf16", True, None, LinearConfig(CHUNK=32, BLOCK_C=32)),
    "gqa-elu1-padded-d80": (2, 4, 2, 37, 80, 96, "fp16", False, "elu1", LinearConfig(CHUNK=16, BLOCK_C=64)),
    "segments-130-d128": (1, 2, 1, 130, 128, 128, "bf16", True, "elu1",
                          LinearConfig(CHUNK=32, BLOCK_C=64, SEGMENT=64)),
    "segments-short-tail": (1, 1, 1, 67, 32, 32, "fp16", False, None, LinearConfig(CHUNK=16, SEGMENT=32,
                                                                                   BLOCK_C=32)),
    # slope 6 per token: g^j leaves fp32's range inside a chunk, so the walk takes its
    # element-by-element decay instead of the separable one
    "steep-decay": (1, 2, 2, 40, 16, 16, "fp16", "steep", None, LinearConfig(CHUNK=16, BLOCK_C=16, SEGMENT=16)),
}


@pytest.mark.parametrize("case", list(FORWARD_CASES), ids=list(FORWARD_CASES))
def test_forward_and_final_state_equal_the_oracle(case):
    batch, q_heads, kv_heads, length, d, dv, dtype, decay, feature_map, config = FORWARD_CASES[case]
    q, k, v = make_inputs(batch, q_heads, kv_heads, length, d, dv, dtype, seed=length)
    if decay == "steep":
        decay = torch.tensor([6.0, 0.05], device=DEVICE)
    else:
        decay = slopes(q_heads) if decay else None
    initial = torch.randn(batch, q_heads, d, dv, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    out, final, _ = linear_forward(q, k, v, decay=decay, feature_map=feature_map, initial_state=initial,
                                   output_final_state=True, config=config)
    want_out, want_state = linear_attention_reference(
        *(t.double().cpu().numpy() for t in (q, k, v)), feature_map=feature_map, scale=d ** -0.5,
        decay=None if decay is None else decay.cpu().numpy(), initial_state=initial.cpu().numpy())
    assert out.dtype == q.dtype and final.dtype == torch.float32
    assert relative_error(out, torch.from_numpy(want_out)) < TOLERANCE[dtype]
    assert relative_error(final, torch.from_numpy(want_state)) < TOLERANCE[dtype]


def test_forward_takes_any_strides_and_needs_no_initial_state():
    # [B, N, H, D] storage (FLA's layout) seen through a transpose: no copy needed.
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in make_inputs(1, 2, 2, 40, 32, 32, "fp16"))
    assert not q.is_contiguous()
    out, final = linear_attention(q, k, v, config=LinearConfig(CHUNK=16, BLOCK_C=32))
    want, _ = linear_attention_reference(*(t.double().cpu().numpy() for t in (q, k, v)), feature_map=None,
                                         scale=32 ** -0.5)
    assert final is None
    assert relative_error(out, torch.from_numpy(want)) < TOLERANCE["fp16"]


def test_repeated_calls_replay_their_launch_plan_and_agree():
    """The second call of a shape passes only its tensors to the bound launches: same answers,
    with or without the final state (a different plan), segments included."""
    q, k, v = make_inputs(1, 2, 1, 50, 16, 16, "fp16", seed=9)
    config = LinearConfig(CHUNK=16, BLOCK_C=16, SEGMENT=32)
    decay = slopes(2)
    first, state = linear_attention(q, k, v, decay=decay, output_final_state=True, config=config)
    again, state_again = linear_attention(q, k, v, decay=decay, output_final_state=True, config=config)
    without, none = linear_attention(q, k, v, decay=decay, config=config)
    other = linear_attention(q * 2, k, v, decay=decay, output_final_state=True, config=config)[0]
    assert none is None
    assert torch.equal(first, again) and torch.equal(state, state_again) and torch.equal(first, without)
    assert relative_error(other, 2 * first.double()) < TOLERANCE["fp16"]


# case: (q_heads, kv_heads, length, dtype, decay, feature_map, SEGMENT, store_states)
BACKWARD_CASES = {
    "decay-tail": (2, 2, 37, "fp16", True, None, 0, True),
    "gqa-elu1-segments-stored": (4, 2, 50, "bf16", True, "elu1", 16, True),
    "segments-recomputed": (2, 1, 50, "fp16", False, None, 32, False),
}


@pytest.mark.parametrize("case", list(BACKWARD_CASES), ids=list(BACKWARD_CASES))
def test_gradients_equal_the_oracle(case):
    q_heads, kv_heads, length, dtype, decay, feature_map, segment, store = BACKWARD_CASES[case]
    d, dv = 16, 32
    q, k, v = (t.requires_grad_(True) for t in make_inputs(2, q_heads, kv_heads, length, d, dv, dtype, seed=3))
    generator = torch.Generator().manual_seed(4)
    initial = torch.randn(2, q_heads, d, dv, generator=generator).to(DEVICE).requires_grad_(True)
    grad_out = torch.randn(2, q_heads, length, dv, generator=generator).to(DTYPES[dtype]).to(DEVICE)
    grad_state = torch.randn(2, q_heads, d, dv, generator=generator).to(DEVICE)
    decay = slopes(q_heads) if decay else None
    out, final = linear_attention(
        q, k, v, decay=decay, feature_map=feature_map, initial_state=initial, output_final_state=True,
        config=LinearConfig(CHUNK=16, BLOCK_C=16, SEGMENT=segment),
        backward_config=LinearBackwardConfig(CHUNK=16, BLOCK_C=16, SEGMENT=segment, store_states=store))
    grads = torch.autograd.grad((out.float() * grad_out.float()).sum() + (final * grad_state).sum(),
                                (q, k, v, initial))
    inputs64 = [t.detach().double().cpu().requires_grad_(True) for t in (q, k, v, initial)]
    want_out, want_state = linear_attention_reference_torch(
        *inputs64[:3], feature_map=feature_map, scale=d ** -0.5,
        decay=None if decay is None else decay.cpu(), initial_state=inputs64[3])
    want = torch.autograd.grad((want_out * grad_out.double().cpu()).sum()
                               + (want_state * grad_state.double().cpu()).sum(), inputs64)
    for name, got, expected in zip(("dq", "dk", "dv", "d_initial_state"), grads, want):
        assert got.shape == expected.shape and torch.isfinite(got).all(), name
        assert relative_error(got, expected) < 2 * TOLERANCE[dtype], name


def test_decode_step_continues_the_chunked_forward():
    q, k, v = make_inputs(2, 4, 2, 21, 32, 16, "fp16", seed=5)
    decay = slopes(4)
    _, state = linear_attention(q[:, :, :20], k[:, :, :20], v[:, :, :20], decay=decay, feature_map="elu1",
                                output_final_state=True, config=LinearConfig(CHUNK=16, BLOCK_C=16))
    out = linear_attention_decode(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], state, decay=decay,
                                  feature_map="elu1", config=LinearDecodeConfig(BLOCK_C=16))
    want, want_state = linear_attention_reference(*(t.double().cpu().numpy() for t in (q, k, v)),
                                                  feature_map="elu1", scale=32 ** -0.5,
                                                  decay=decay.cpu().numpy())
    assert relative_error(out, torch.from_numpy(want[:, :, 20:])) < TOLERANCE["fp16"]
    assert relative_error(state, torch.from_numpy(want_state)) < TOLERANCE["fp16"]


def test_recurrent_form_equals_the_quadratic_oracle():
    rng = np.random.default_rng(7)
    q, k = rng.standard_normal((2, 2, 6, 9, 5))
    k = k[:, :3]
    v = rng.standard_normal((2, 3, 9, 4))
    q = rng.standard_normal((2, 6, 9, 5))
    decay, initial = rng.uniform(0, 1, 6), rng.standard_normal((2, 6, 5, 4))
    out, state = recurrent_linear_attention(*(torch.from_numpy(t) for t in (q, k, v)), feature_map="elu1",
                                            scale=0.7, decay=torch.from_numpy(decay),
                                            initial_state=torch.from_numpy(initial))
    want_out, want_state = linear_attention_reference(q, k, v, feature_map="elu1", scale=0.7, decay=decay,
                                                      initial_state=initial)
    np.testing.assert_allclose(out.numpy(), want_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.numpy(), want_state, rtol=0, atol=1e-12)


def test_registry_launchers_run_every_linear_kernel():
    problem = Problem(batch=1, q_heads=2, kv_heads=1, q_len=20, kv_len=20, head_dim=16, causal=True,
                               dtype="fp16")
    for name, config in (("linear-fwd", LinearConfig(CHUNK=16, BLOCK_C=16)),
                         ("linear-bwd", LinearBackwardConfig(CHUNK=16, BLOCK_C=16))):
        spec = KERNELS[name]
        inputs = spec.make_inputs(problem, device=DEVICE)
        got, want = spec.launch(config, inputs), spec.reference(inputs)
        assert relative_error(got[0], want[0]) < TOLERANCE["fp16"], name
    decode = Problem(batch=1, q_heads=2, kv_heads=1, q_len=1, kv_len=1, head_dim=16, dtype="fp16")
    spec = KERNELS["linear-decode"]
    inputs = spec.make_inputs(decode, device=DEVICE)
    want = spec.reference(inputs)
    got = spec.launch(LinearDecodeConfig(BLOCK_C=16), inputs)
    assert relative_error(got[0], want[0]) < TOLERANCE["fp16"]
    assert relative_error(got[1], want[1]) < 1e-5


def test_bad_inputs_are_rejected_before_any_launch():
    q, k, v = make_inputs(1, 2, 2, 8, 16, 16, "fp16")
    with pytest.raises(ShapeError, match="self-attention"):
        linear_attention(q, k[:, :, :4], v[:, :, :4])
    with pytest.raises(ShapeError, match="feature_map"):
        linear_attention(q, k, v, feature_map="relu")
    with pytest.raises(ShapeError, match="per-head slopes"):
        linear_attention(q, k, v, decay=torch.ones(3, device=DEVICE))
    with pytest.raises(ShapeError, match="initial_state"):
        linear_attention(q, k, v, initial_state=torch.zeros(1, 2, 16, 8, device=DEVICE))
    with pytest.raises(ShapeError, match="one token per call"):
        linear_attention_decode(q, k, v, torch.zeros(1, 2, 16, 16, device=DEVICE))
    with pytest.raises(ShapeError, match="float32"):
        linear_attention_decode(q[:, :, :1], k[:, :, :1], v[:, :, :1], torch.zeros(1, 2, 16, 16, device=DEVICE,
                                                                                   dtype=torch.float16))


def test_configs_that_cannot_run_are_rejected_with_reasons():
    problem = Problem(batch=1, q_heads=16, kv_heads=16, q_len=65536, kv_len=65536, head_dim=128,
                               causal=True)
    spec = KERNELS["linear-fwd"]
    reasons = spec.config_reasons(LinearConfig(CHUNK=128, BLOCK_C=128, num_warps=4), problem)
    assert any("registers" in r for r in reasons)
    assert any("multiple of CHUNK" in r for r in spec.config_reasons(LinearConfig(CHUNK=64, SEGMENT=96), problem))
    with pytest.raises(ConfigError, match="causal"):
        spec.validate(LinearConfig(), Problem(batch=1, q_heads=1, q_len=64, kv_len=64, head_dim=64))
    assert spec.search_space(problem) and all(not spec.config_reasons(c, problem) for c in spec.search_space(problem))


def test_default_config_cuts_long_sequences_into_segments_to_fill_the_gpu():
    long = default_config(Problem(batch=1, q_heads=16, q_len=65536, kv_len=65536, head_dim=128, causal=True))
    short = default_config(Problem(batch=32, q_heads=16, q_len=2048, kv_len=2048, head_dim=128, causal=True))
    assert short.SEGMENT == 0  # 32 x 16 heads x 2 column blocks already fill the GPU
    assert long.SEGMENT and 65536 // long.SEGMENT * 16 * 2 >= 256


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("decay", [False, True])
def test_real_sizes_on_the_gpu(head_dim, decay):
    q, k, v = (t.requires_grad_(True) for t in make_inputs(2, 8, 4, 4099, head_dim, head_dim, "bf16", seed=11))
    decay = slopes(8) if decay else None
    out, final = linear_attention(q, k, v, decay=decay, output_final_state=True)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    inputs = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
    want_out, want_state = linear_attention_reference_torch(*inputs, feature_map=None, scale=head_dim ** -0.5,
                                                            decay=decay)
    want = torch.autograd.grad(want_out, inputs, grad_out.float())
    assert relative_error(out, want_out) < TOLERANCE["bf16"]
    assert relative_error(final, want_state) < TOLERANCE["bf16"]
    for got, expected in zip(grads, want):
        assert relative_error(got, expected) < 2 * TOLERANCE["bf16"]


COMPILE_CHECK = r"""
import json, sys
sys.path.insert(0, "benchmarks")
from compile_linear import compile_walk
print(json.dumps([compile_walk(role="forward", num_warps=4, num_stages=3),
                  compile_walk(role="dv", decay=True, num_warps=4, num_stages=2)]))
"""


@pytest.mark.skipif(not interpreting(), reason="on a GPU every kernel is compiled for real")
def test_walk_compiles_for_sm90_pipelined_and_as_the_shared_memory_model_says():
    """Triton's compiler (no GPU needed) on the walk's default config: it compiles (the
    interpreter accepts what the compiler may reject), the chunk loads are pipelined (asynchronous
    copies: a mask along the contiguous dimension would rule them out), nothing spills, and the
    shared memory is the resource model's."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1", PYTHONPATH=str(root))
    result = subprocess.run([sys.executable, "-c", COMPILE_CHECK], env=env, cwd=root, capture_output=True,
                            text=True, timeout=240)
    if "No module named" in result.stderr and "triton" in result.stderr:  # pragma: no cover
        pytest.skip("Triton's compiler is not importable here")
    assert result.returncode == 0, result.stderr[-3000:]
    forward, reverse_decay = json.loads(result.stdout.strip().splitlines()[-1])
    problem = Problem(batch=1, q_heads=1, q_len=4096, kv_len=4096, head_dim=128, causal=True)
    config = default_config(problem)
    assert (config.num_warps, config.num_stages) == (4, 3)  # what COMPILE_CHECK compiles
    assert forward["shared_bytes"] == KERNELS["linear-fwd"].shared_memory_bytes(config, problem)
    assert forward["spill_bytes"] == 0
    # the backward's default (4 warps, 2 stages) was the fastest measured (W4) though its decayed
    # reverse walk spills a little (72 bytes per thread with Triton 3.6)
    for compiled in (forward, reverse_decay):
        assert compiled["async_copies"] > 0 and compiled["spill_bytes"] <= 256


def test_chunk_loops_branch_only_on_constexpr_flags():
    """Triton 3.6's software pipeliner fails on sm_90 ("PassManager::run failed" in
    TritonGPUPipeline) when a pipelined loop holds a branch on a runtime value, as the walk's
    decay did (W3 on the H200); Triton 3.9 here compiles it, so only this static check catches
    it on a CPU: every `if` inside a `for` of the linear kernels tests a constexpr parameter."""
    import ast
    import inspect

    from einsim.kernels.linear import chunk

    for kernel in (chunk._walk_chunks, chunk._chunk_walk, chunk._segment_sums, chunk._segment_scan):
        tree = ast.parse(inspect.getsource(kernel.fn))
        function = tree.body[0]
        constexprs = {a.arg for a in function.args.args
                      if a.annotation is not None and "constexpr" in ast.unparse(a.annotation)}
        for loop in (node for node in ast.walk(function) if isinstance(node, ast.For)):
            for branch in (node for node in ast.walk(loop) if isinstance(node, ast.If)):
                names = {n.id for n in ast.walk(branch.test) if isinstance(n, ast.Name)}
                assert names <= constexprs, (f"{kernel.fn.__name__}: `if {ast.unparse(branch.test)}` inside a "
                                             f"chunk loop tests a runtime value ({sorted(names - constexprs)})")
