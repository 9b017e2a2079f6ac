"""Fuzzing the cascade compiler (einsim.kernels.compile) for silent wrong answers: softmax-attention
cascades with a generated score (any element-wise expression of QK, coordinates, symbols and an
extra input) and a generated mask (comparisons of affine expressions in the positions and sizes,
joined by and/or/not, and a tensor read). Each cascade compiles or is refused by name; what
compiles must compute what the float64 executor computes from the same text: its torch twin
always, its Triton kernels (forward and gradients, in the interpreter on CPU) on a subset.

This found that a cascade reading K, Q or V at a constant position (K[b,h,0,m1,m0]) compiled to
plain attention."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
os.environ.setdefault("EINSIM_COMPILE_DIR", tempfile.mkdtemp(prefix="einsim-compiled-"))

from hypothesis import given, strategies as st  # noqa: E402

from fuzz_support import FUZZ, check_api  # noqa: E402

from einsim.einsum_cascades import execute, parse_cascade  # noqa: E402
from einsim.kernels import compile as compile_cascade  # noqa: E402
from einsim.kernels.compiler.registry import example_tensors  # noqa: E402
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig  # noqa: E402
from einsim.kernels.runtime import interpreting  # noqa: E402
from einsim.problem import Problem  # noqa: E402

DEVICE = "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"
SMALL = FlashConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2)
SMALL_BWD = FlashBackwardConfig(BLOCK_M=16, BLOCK_N=16, BLOCK_M_DQ=16, BLOCK_N_DQ=16, num_warps=4, num_stages=2)
SYMBOLS = {"w": 3, "c": 2}  # a window-like and a scale-like size symbol the generated text may use

TEMPLATE = """name: fuzzed
ranks: {{B: batch, H: heads, E: head_dim, F: v_head_dim, M: kv_len, P: q_len, M0: block_m}}
symbols: {{batch: 1, heads: 1, head_dim: 16, v_head_dim: 16, block_m: 4, w: 3, c: 2}}
{filters}partitions: {{M: [M1, M0]}}
inputs: {{{inputs}}}
init: {{RM: -inf, RD: 0, RNV: 0}}
einsums:
  - QK[b,h,m1,m0,p]   = Q[b,h,e,p] * K[b,h,e,m1,m0]
  - 'S[b,h,m1,m0,p]    = {score}'
  - LM[b,h,m1,p]      = max(m0) S[b,h,m1,m0,p]
  - RM[b,h,m1+1,p]    = max(RM[b,h,m1,p], LM[b,h,m1,p])
  - SLN[b,h,m1,m0,p]  = exp(S[b,h,m1,m0,p] - RM[b,h,m1+1,p])
  - SLD[b,h,m1,p]     = SLN[b,h,m1,m0,p]
  - PRM[b,h,m1,p]     = exp(RM[b,h,m1,p] - RM[b,h,m1+1,p])
  - SPD[b,h,m1,p]     = PRM[b,h,m1,p] * RD[b,h,m1,p]
  - RD[b,h,m1+1,p]    = SPD[b,h,m1,p] + SLD[b,h,m1,p]
  - SLNV[b,h,m1,f,p]  = SLN[b,h,m1,m0,p] * {value}
  - SPNV[b,h,m1,f,p]  = PRM[b,h,m1,p] * RNV[b,h,m1,f,p]
  - RNV[b,h,m1+1,f,p] = SPNV[b,h,m1,f,p] + SLNV[b,h,m1,f,p]
  - AV[b,h,f,p]       = RNV[b,h,M1,f,p] / RD[b,h,M1,p]
outputs: [AV]
"""
EXTRA_INPUTS = {"BIAS": "[H, P, M]", "DQ": "[B, P]", "DK": "[B, M]", "SLOPE": "[H]"}
QK = "QK[b,h,m1,m0,p]"

# terms without QK; bounded, so fp16 kernels can be held to a tight tolerance
TERMS = ("0.5", "2", "c", "m", "p", "M", "w", "BIAS[h,p,m]", "SLOPE[h] * (p - m)", "tanh(BIAS[h,p,m])", "0.1 * m",
         "-0.25 * p", "abs(BIAS[h,p,m])")
AFFINE = ("m", "p", "p + M - P", "p + M - P - w", "m + w", "p - w", "M - 1 - m", "2 * m", "w", "0", "1", "p + 1",
          "m1", "m1 * 4", "P - p", "c * p", "M")
COMPARE = ("<", "<=", ">", ">=", "==", "!=")


@st.composite
def scores(draw: st.DrawFn) -> str:
    """An element-wise function of QK (used once, as the compiler needs), or rarely any text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from((f"{QK} + {QK}", "BIAS[h,p,m]", f"exp({QK})", f"{QK} * {QK}",
                                     f"{QK} / 0.5", f"max({QK}, 0)", f"{QK} + K[b,h,0,m1,m0]")))
    score = QK
    for _ in range(draw(st.integers(0, 3))):
        term = draw(st.sampled_from(TERMS))
        score = draw(st.sampled_from((f"{score} + {term}", f"{term} - {score}", f"({score}) * 0.5",
                                      f"2 * tanh(({score}) / 2)", f"{score} - {term}", f"-({score})",
                                      f"({score}) / c")))
    return score


@st.composite
def masks(draw: st.DrawFn) -> str | None:
    """None (no mask) or a filter: comparisons of affine terms, and/or/not, a document-id read."""
    if draw(st.integers(0, 4)) == 0:
        return None

    def condition(depth: int) -> str:
        kind = draw(st.integers(0, 5 if depth < 2 else 1))
        if kind <= 1:
            if draw(st.integers(0, 7)) == 0:
                return "DQ[b,p] == DK[b,m]"
            return f"{draw(st.sampled_from(AFFINE))} {draw(st.sampled_from(COMPARE))} {draw(st.sampled_from(AFFINE))}"
        if kind == 2:
            return f"not ({condition(depth + 1)})"
        joiner = draw(st.sampled_from((" and ", " or ")))
        return f"({condition(depth + 1)}){joiner}({condition(depth + 1)})"

    return condition(0)


@st.composite
def cascades(draw: st.DrawFn) -> str:
    score, mask = draw(scores()), draw(masks())
    value = "V[b,h,f,m1,m0]" if draw(st.integers(0, 19)) else "V[b,h,f,0]"
    text_used = score + (mask or "")
    inputs = ["Q: [B, H, E, P]", "K: [B, H, E, M]", "V: [B, H, F, M]"]
    inputs += [f"{name}: {ranks}" for name, ranks in EXTRA_INPUTS.items() if f"{name}[" in text_used]
    filters = f"filters: [\"{mask}\"]\n" if mask else ""
    return TEMPLATE.format(filters=filters, inputs=", ".join(inputs), score=score, value=value)


SHAPES = st.sampled_from(((1, 1), (7, 11), (13, 5), (9, 37), (40, 9)))


def _executor(f, q, k, v, extras: dict) -> np.ndarray:
    """The cascade's own text run by the float64 executor on SDPA-layout tensors (the scale put
    into Q, as QK is linear in Q)."""
    form = f.form
    q64, k64, v64 = (t.detach().double().cpu().numpy() for t in (q, k, v))
    inputs = {form.q: np.swapaxes(q64 / np.sqrt(q.shape[-1]), 2, 3), form.k: np.swapaxes(k64, 2, 3),
              form.v: np.swapaxes(v64, 2, 3)}
    inputs.update({name: t.detach().double().cpu().numpy() for name, t in extras.items()})
    out = execute(form.cascade, inputs, sizes=dict(SYMBOLS))[form.output]
    return np.swapaxes(out, 2, 3)


def _case(text: str, shape: tuple[int, int], dtype):
    """The compiled cascade (None when refused by name) and its inputs at `shape`."""
    f = check_api(lambda: compile_cascade(parse_cascade(text, "fuzzed.yaml")))
    if hypothesis.currently_in_test_context():
        hypothesis.event("compiled" if f is not None else "refused by name")
    if f is None:
        return None
    q_len, kv_len = shape
    generator = torch.Generator().manual_seed(q_len * 100 + kv_len)
    q, k, v = (torch.randn(1, 2, n, 16, generator=generator).to(dtype).to(DEVICE) for n in (q_len, kv_len, kv_len))
    problem = Problem(batch=1, q_heads=2, kv_heads=2, q_len=q_len, kv_len=kv_len, head_dim=16)
    extras = check_api(lambda: example_tensors(f, problem, DEVICE, seed=1))
    return f, q, k, v, extras


@hypothesis.settings(FUZZ, max_examples=60)
@given(text=cascades(), shape=SHAPES)
def test_fuzz_compiled_cascades_twin_equals_the_executor(text: str, shape: tuple[int, int]) -> None:
    """Every generated cascade compiles or is refused by name; the torch twin of what compiles
    (the form the kernels are generated from) equals the executor of the cascade's text."""
    case = _case(text, shape, torch.float64)
    if case is None:
        return
    f, q, k, v, extras = case
    twin = check_api(lambda: f.reference(q.cpu(), k.cpu(), v.cpu(), **SYMBOLS_OF(f),
                                         **{n: t.cpu() for n, t in extras.items()}))
    want = _executor(f, q, k, v, extras)
    np.testing.assert_allclose(twin.numpy(), want, atol=1e-6, rtol=0, err_msg=text)  # the twin takes coordinates as float32


def SYMBOLS_OF(f) -> dict:  # noqa: N802  (the symbols the compiled callable takes)
    return {n: v for n, v in SYMBOLS.items() if n in f.cascade.symbols}


@hypothesis.settings(FUZZ, max_examples=12)
@given(text=cascades(), shape=SHAPES)
def test_fuzz_compiled_kernels_equal_the_executor(text: str, shape: tuple[int, int]) -> None:
    """What compiles runs: the fused forward equals the executor within fp16 tolerance (rows that
    see no key give 0 in both), its gradients equal the float64 twin's autograd."""
    case = _case(text, shape, torch.float16)
    if case is None:
        return
    f, q, k, v, extras = case
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = check_api(lambda: f(*leaves, config=SMALL, backward_config=SMALL_BWD, **SYMBOLS_OF(f), **extras))
    if out is None:
        return
    want = _executor(f, q, k, v, extras)
    assert not torch.isnan(out).any(), f"NaN in the kernel's output\n{text}"
    np.testing.assert_allclose(out.detach().double().cpu().numpy(), want, atol=2e-2, rtol=0, err_msg=text)
    do = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, do)
    twin_leaves = [t.detach().double().cpu().requires_grad_(True) for t in (q, k, v)]
    twin = f.reference(*twin_leaves, **SYMBOLS_OF(f), **{n: t.cpu().double() if t.is_floating_point() else t.cpu()
                                                           for n, t in extras.items()})
    twin_grads = torch.autograd.grad(twin, twin_leaves, do.double().cpu())
    for name, got, expected in zip("qkv", grads, twin_grads):
        error = (got.double().cpu() - expected).abs().max().item() / max(expected.abs().max().item(), 1e-3)
        assert error <= 5e-2, f"d{name}: relative error {error:.3g}\n{text}"


def test_a_mask_negating_a_condition_of_sizes_alone() -> None:
    """`not (w <= w)` is a Python bool in the torch twin, whose ~ was -2 (truthy, and an integer
    mask torch refused): found by the fuzzer above."""
    text = TEMPLATE.format(filters='filters: ["m <= p or not (w <= w)"]\n',
                           inputs="Q: [B, H, E, P], K: [B, H, E, M], V: [B, H, F, M]", score=QK, value="V[b,h,f,m1,m0]")
    f, q, k, v, extras = _case(text, (9, 11), torch.float64)
    twin = f.reference(q.cpu(), k.cpu(), v.cpu(), w=3)
    np.testing.assert_allclose(twin.numpy(), _executor(f, q, k, v, extras), atol=1e-6, rtol=0)
