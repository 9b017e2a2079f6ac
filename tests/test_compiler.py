"""The cascade compiler (einsim.kernels.compile): every compiled cascade against the float64
executor (einsum_cascades.execute) on odd shapes, forward and gradients; gradients of variants
against the executor's own directional derivatives (central differences in float64, so no
second formula is written here); what it refuses, and how it caches what it generates. On CPU
the kernels run in Triton's interpreter at tiny shapes."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
os.environ.setdefault("EINSIM_COMPILE_DIR", tempfile.mkdtemp(prefix="einsim-compiled-"))

from einsim.einsum_cascades import execute, load_cascade, parse_cascade  # noqa: E402
from einsim.einsum_cascades.reference import attention_reference_torch  # noqa: E402
from einsim.errors import ConfigError, ShapeError  # noqa: E402
from einsim.kernels import compile as compile_cascade  # noqa: E402
from einsim.kernels.compiler.source_cache import module_path  # noqa: E402
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig  # noqa: E402
from einsim.kernels.runtime import interpreting  # noqa: E402

DEVICE = "cpu" if interpreting() or not torch.cuda.is_available() else "cuda"
SMALL = FlashConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2)
WIDE = FlashConfig(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=2)
SMALL_BWD = FlashBackwardConfig(BLOCK_M=16, BLOCK_N=32, BLOCK_M_DQ=32, BLOCK_N_DQ=16,
                                num_warps=4, num_stages=2)
TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}  # absolute, outputs are O(1)
GRADIENT_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # relative to the largest entry


def make_qkv(batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype=torch.float16, seed=0,
             value_dim=None):
    generator = torch.Generator().manual_seed(seed)
    shapes = ((batch, q_heads, q_len, head_dim), (batch, kv_heads, kv_len, head_dim),
              (batch, kv_heads, kv_len, value_dim or head_dim))
    return [torch.randn(s, generator=generator).to(dtype).to(DEVICE) for s in shapes]


def executor_attention(cascade, q, k, v, scale=None, symbols=None, **extras) -> np.ndarray:
    """The cascade run by the float64 executor on SDPA-layout tensors: QK is scaled by putting
    the scale into Q (QK is linear in Q), key/value heads repeated when the cascade has no GQA
    of its own. Returns [B, Hq, P, Dv]."""
    form = compile_cascade(cascade).form
    q64, k64, v64 = (t.detach().double().cpu().numpy() for t in (q, k, v))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    roles = form.roles
    if roles.kv_head == roles.head and k64.shape[1] != q64.shape[1]:
        group = q64.shape[1] // k64.shape[1]
        k64, v64 = (np.repeat(t, group, axis=1) for t in (k64, v64))
    inputs = {form.q: np.swapaxes(q64 * scale, 2, 3), form.k: np.swapaxes(k64, 2, 3),
              form.v: np.swapaxes(v64, 2, 3)}
    inputs.update({name: t.detach().double().cpu().numpy() for name, t in extras.items()})
    out = execute(form.cascade, inputs, sizes=symbols)[form.output]
    return np.swapaxes(out, 2, 3)


def assert_close(out, reference, dtype):
    assert not torch.isnan(out).any(), "NaN in the kernel's output"
    np.testing.assert_allclose(out.detach().double().cpu().numpy(), reference, atol=TOLERANCE[dtype], rtol=0)


# -- the library's 1-pass cascades, forward and gradients ----------------------------------------
# (cascade, batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype, symbols, oracle mask)
LIBRARY_CASES = {
    "fusemax-length-1": ("fusemax", 1, 2, 2, 1, 1, 64, torch.float16, {}, {}),
    "fusemax-67-d80-gqa2": ("fusemax", 1, 2, 1, 67, 67, 80, torch.bfloat16, {}, {}),
    "causal-130-d64": ("attention-causal", 1, 1, 1, 130, 130, 64, torch.float16, {},
                       {"causal": True}),
    "causal-q-longer-empty-rows": ("attention-causal", 1, 2, 1, 40, 9, 128, torch.float16, {},
                                   {"causal": True}),
    "window-67": ("attention-window", 1, 2, 2, 67, 67, 64, torch.bfloat16,
                  {"window_left": 9, "window_right": 3}, {"window": (9, 3)}),
    "gqa-4-to-1": ("gqa", 1, 4, 1, 33, 50, 64, torch.float16, {}, {}),
    # the running output kept normalised (FlashAttention-1): the same kernel
    "fa1-normalised-19": ("attention-1pass", 1, 2, 2, 19, 40, 32, torch.float16, {}, {}),
}


@pytest.mark.parametrize("case", list(LIBRARY_CASES), ids=list(LIBRARY_CASES))
def test_library_cascade_compiles_to_the_executors_attention(case):
    name, b, hq, hkv, nq, nk, d, dtype, symbols, oracle_mask = LIBRARY_CASES[case]
    f = compile_cascade(name)
    q, k, v = make_qkv(b, hq, hkv, nq, nk, d, dtype)
    out = f(q, k, v, config=SMALL, **symbols)
    assert out.shape == (b, hq, nq, d) and out.dtype == dtype
    assert_close(out, executor_attention(name, q, k, v, symbols=symbols, **{}), dtype)
    if oracle_mask.get("causal") and nq > nk:
        assert (out[:, :, : nq - nk] == 0).all(), "rows that see no key must output 0"

    # gradients against the oracle's torch twin (the executor has none), same mask
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = f(q, k, v, config=SMALL, backward_config=SMALL_BWD, **symbols)
    do = torch.randn_like(out)
    out.backward(do)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref, _ = attention_reference_torch(q64, k64, v64, **oracle_mask)
    ref.backward(do.double())
    for name_, got, want in (("dq", q.grad, q64.grad), ("dk", k.grad, k64.grad),
                             ("dv", v.grad, v64.grad)):
        error = (got.double() - want).abs().max().item() / max(want.abs().max().item(), 1e-3)
        assert error <= GRADIENT_TOLERANCE[dtype], f"{name_}: relative error {error:.3g}"


def test_compiled_fusemax_takes_any_strides_and_an_explicit_scale():
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(1, 19, 2, 32, generator=generator).half().to(DEVICE).transpose(1, 2)
    k = torch.randn(1, 2, 19, 40, generator=generator).half().to(DEVICE)[..., 3:35]
    v = torch.randn(1, 2, 32, 19, generator=generator).half().to(DEVICE).transpose(2, 3)
    out = compile_cascade("fusemax")(q, k, v, scale=0.3, config=SMALL)
    assert_close(out, executor_attention("fusemax", q, k, v, scale=0.3), torch.float16)


def test_a_value_head_dim_other_than_the_key_head_dim():
    q, k, _ = make_qkv(1, 2, 2, 21, 30, 32)
    v = make_qkv(1, 2, 2, 21, 30, 64)[2]
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = compile_cascade("attention-causal")(*leaves, config=SMALL, backward_config=SMALL_BWD)
    assert out.shape == (1, 2, 21, 64)
    assert_close(out, executor_attention("attention-causal", q, k, v), torch.float16)
    out.sum().backward()
    references = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    attention_reference_torch(*references, causal=True)[0].sum().backward()
    for got, want in zip(leaves, references):
        error = (got.grad.double() - want.grad).abs().max() / want.grad.abs().max()
        assert error <= GRADIENT_TOLERANCE[torch.float16]


def test_scale_one_leaves_the_cascade_as_written():
    q, k, v = make_qkv(1, 1, 1, 20, 20, 16)
    q = q * 0.25
    out = compile_cascade("fusemax")(q, k, v, scale=1.0, config=SMALL)
    assert_close(out, executor_attention("fusemax", q, k, v, scale=1.0), torch.float16)


# -- variants: score expressions, extra inputs, filters ----------------------------------------
FUSEMAX_TAIL = """
  - LM[b,h,m1,p]      = max(m0) S[b,h,m1,m0,p]
  - RM[b,h,m1+1,p]    = max(RM[b,h,m1,p], LM[b,h,m1,p])
  - SLN[b,h,m1,m0,p]  = exp(S[b,h,m1,m0,p] - RM[b,h,m1+1,p])
  - SLD[b,h,m1,p]     = SLN[b,h,m1,m0,p]
  - PRM[b,h,m1,p]     = exp(RM[b,h,m1,p] - RM[b,h,m1+1,p])
  - SPD[b,h,m1,p]     = PRM[b,h,m1,p] * RD[b,h,m1,p]
  - RD[b,h,m1+1,p]    = SPD[b,h,m1,p] + SLD[b,h,m1,p]
  - SLNV[b,h,m1,f,p]  = SLN[b,h,m1,m0,p] * V[b,h,f,m1,m0]
  - SPNV[b,h,m1,f,p]  = PRM[b,h,m1,p] * RNV[b,h,m1,f,p]
  - RNV[b,h,m1+1,f,p] = SPNV[b,h,m1,f,p] + SLNV[b,h,m1,f,p]
  - AV[b,h,f,p]       = RNV[b,h,M1,f,p] / RD[b,h,M1,p]
outputs: [AV]
"""


def variant(name: str, score: str, inputs: str = "", filters: str = "", symbols: str = "") -> str:
    """A fusemax-shaped cascade whose score is `score` (a line defining S[b,h,m1,m0,p])."""
    return f"""
name: {name}
ranks: {{B: batch, H: heads, E: head_dim, F: v_head_dim, M: kv_len, P: q_len, M0: block_m}}
symbols: {{batch: 1, heads: 1, head_dim: 64, v_head_dim: 64, block_m: 64{symbols}}}
partitions: {{M: [M1, M0]}}
inputs: {{Q: [B, H, E, P], K: [B, H, E, M], V: [B, H, F, M]{inputs}}}
init: {{RM: -inf, RD: 0, RNV: 0}}
{f"filters: [{filters!r}]" if filters else ""}
einsums:
  - QK[b,h,m1,m0,p]   = Q[b,h,e,p] * K[b,h,e,m1,m0]
  - {score}
""" + FUSEMAX_TAIL


VARIANTS = {
    # Gemma-2's soft-capping, at a cap small enough to bite at these scores
    "softcap": (variant("softcap", "S[b,h,m1,m0,p] = 2 * tanh(QK[b,h,m1,m0,p] / 2)"), {}),
    # a per-head temperature: dS/dQK reads an input (not a constant)
    "per-head-temperature": (variant("temperature", "S[b,h,m1,m0,p] = QK[b,h,m1,m0,p] * TEMP[h]",
                                     inputs=", TEMP: [H]"), {"TEMP": ("H",)}),
    # row and column limits beside causal: rows that see no key, tiles dropped whole
    "late-start-causal": (variant("late-start", "S[b,h,m1,m0,p] = QK[b,h,m1,m0,p]",
                                  filters="m <= p + M - P and m >= 3 and p >= 2"), {}),
    # not affine in m: tiles are skipped by a block mask built from the element mask
    "band-block-mask": (variant("band", "S[b,h,m1,m0,p] = QK[b,h,m1,m0,p]",
                                filters="abs(m - p - M + P) <= 26 and 2 * m <= p + M - P + 50"), {}),
}


def extra_tensor(ranks, sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn([sizes[r] for r in ranks], generator=generator).to(DEVICE)


@pytest.mark.parametrize("case", list(VARIANTS), ids=list(VARIANTS))
def test_variant_forward_and_gradients_equal_the_executor(case):
    text, extras = VARIANTS[case]
    cascade = parse_cascade(text, source=f"<{case}>")
    f = compile_cascade(cascade)
    b, h, nq, nk, d = 1, 2, 37, 45, 32
    q, k, v = make_qkv(b, h, h, nq, nk, d, torch.float32)
    sizes = {"H": h, "P": nq, "M": nk}
    tensors = {name: extra_tensor(ranks, sizes, seed) for seed, (name, ranks) in enumerate(extras.items())}
    q16, k16, v16 = (t.half().requires_grad_(True) for t in (q, k, v))
    out = f(q16, k16, v16, config=SMALL, backward_config=SMALL_BWD, **tensors)
    reference = executor_attention(cascade, q16, k16, v16, **tensors)
    assert_close(out, reference, torch.float16)
    if case == "late-start-causal":
        assert (out[:, :, :2] == 0).all(), "rows the filter leaves without keys output 0"
    do = torch.randn_like(out)
    out.backward(do)
    # <dL/dx, u> against the executor's central difference along u, for each of q, k, v
    eps = 1e-4
    do64 = do.double().cpu().numpy()
    base = {"q": q16, "k": k16, "v": v16}
    for name, grad in (("q", q16.grad), ("k", k16.grad), ("v", v16.grad)):
        direction = torch.randn(base[name].shape, generator=torch.Generator().manual_seed(7))
        moved = {n: t.detach().double() for n, t in base.items()}
        plus, minus = dict(moved), dict(moved)
        plus[name] = moved[name] + eps * direction.double()
        minus[name] = moved[name] - eps * direction.double()
        numeric = ((executor_attention(cascade, plus["q"], plus["k"], plus["v"], **tensors)
                    - executor_attention(cascade, minus["q"], minus["k"], minus["v"], **tensors))
                   * do64).sum() / (2 * eps)
        analytic = (grad.double().cpu() * direction.double()).sum().item()
        scale = np.abs(grad.double().cpu().numpy()).sum() * 1e-2 + 1e-3
        assert abs(analytic - numeric) <= scale, f"d{name}: {analytic} vs executor {numeric}"


def test_masks_choose_tile_ranges_or_a_block_mask():
    assert compile_cascade("attention-window").generated.mask_mode == "ranges"
    # several affine terms: a block mask too (two long loops instead of three short ones a term)
    assert compile_cascade("sinks-window").generated.mask_mode == "blocks"
    band = compile_cascade(parse_cascade(VARIANTS["band-block-mask"][0], source="<band>"))
    assert band.generated.mask_mode == "blocks"
    assert not band.generated.mask_reads_tensors and not band.generated.mask_by_head


def test_variant_source_shows_the_score_and_its_derivative():
    f = compile_cascade(parse_cascade(VARIANTS["softcap"][0], source="<softcap>"))
    assert "lib.tanh((qk * (1.0 / 2)))" in f.source and "def score2(" in f.source
    assert "def score_grad" in f.source and "GRAD_IS_CONST = tl.constexpr(False)" in f.source
    identity = compile_cascade("attention-causal")
    assert "SCORE_IS_QK = tl.constexpr(True)" in identity.source



def test_separable_score_terms_cost_one_operation_per_element():
    """ALiBi's SLOPE[h] * (p + M - P - m): the slope is distributed over the distance, the
    query part summed as a column and the key part as a row, added once per element (not an
    integer subtraction, a conversion and a multiply over the whole tile)."""
    alibi = compile_cascade("alibi").source
    slope = "(lib.as_value(tl.load(x_SLOPE + head.to(tl.int64) * x_SLOPE_s0)) * 1.4426950408889634)"
    assert f"return (qk2 + (({slope} * ((q_len - kv_len) - P_)) + ({slope} * M_)))" in alibi
    assert "SCORE_FINITE = tl.constexpr(True)" in alibi


def test_scores_that_may_be_infinite_keep_the_explicit_row_guard():
    from einsim.kernels.compiler.generate import score_is_finite

    def score(text):
        return compile_cascade(parse_cascade(variant("s", text), source="<s>")).form.score

    assert score_is_finite(score("S[b,h,m1,m0,p] = 30 * tanh(QK[b,h,m1,m0,p] / 30)"))
    assert not score_is_finite(score("S[b,h,m1,m0,p] = QK[b,h,m1,m0,p] + log(p + 1)"))
    assert not score_is_finite(score("S[b,h,m1,m0,p] = QK[b,h,m1,m0,p] / (p + 1)"))

# -- what the compiler refuses ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ffn", "linear-attention", "attention-2pass"])
def test_cascades_that_are_not_one_pass_softmax_are_refused_naming_the_einsum(name):
    with pytest.raises(ConfigError, match=r"Einsum '.*': cannot compile cascade"):
        compile_cascade(name)


def test_a_running_sum_without_the_max_correction_is_refused():
    text = variant("no-correction", "S[b,h,m1,m0,p] = QK[b,h,m1,m0,p]").replace(
        "SPD[b,h,m1,p]     = PRM[b,h,m1,p] * RD[b,h,m1,p]",
        "SPD[b,h,m1,p]     = LM[b,h,m1,p] * RD[b,h,m1,p]")
    with pytest.raises(ConfigError, match="correction of a running sum"):
        compile_cascade(parse_cascade(text, source="<no-correction>"))


def test_a_score_indexed_by_the_head_dimension_is_refused():
    text = variant("by-e", "S[b,h,m1,m0,p] = QK[b,h,m1,m0,p] + W[e]", inputs=", W: [E]")
    with pytest.raises(ConfigError):
        compile_cascade(parse_cascade(text, source="<by-e>"))


def test_the_plain_form_compiles_to_the_same_kernel():
    """attention-3pass (a global max, exp, sum, divide, then AV) goes through the FuseMax
    reassociation (einsum_cascades.rewrite) and becomes the fusemax kernel, mask included."""
    plain = compile_cascade("attention-3pass")
    assert plain.form.score == compile_cascade("fusemax").form.score
    assert any(e.iterative_rank for e in plain.cascade.einsums)
    q, k, v = make_qkv(1, 2, 2, 19, 26, 16)
    assert_close(plain(q, k, v, config=SMALL), executor_attention("attention-3pass", q, k, v),
                 torch.float16)


def test_missing_and_misshapen_extra_inputs_are_named():
    f = compile_cascade("relative-bias")
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16)
    with pytest.raises(ShapeError, match=r"missing input\(s\) BIAS \[H, P, M\]"):
        f(q, k, v, config=SMALL)
    with pytest.raises(ShapeError, match=r"BIAS .* must have shape \(2, 8, 8\)"):
        f(q, k, v, config=SMALL, BIAS=torch.zeros(2, 8, 9, device=DEVICE))
    with pytest.raises(ShapeError, match="unknown keyword 'bias'"):
        f(q, k, v, config=SMALL, bias=torch.zeros(2, 8, 8, device=DEVICE))


# -- generated source: one file per content, reused ----------------------------------------------
def test_generated_source_is_cached_by_content_and_importable():
    f = compile_cascade("attention-causal")
    assert compile_cascade(load_cascade("attention-causal")) is f
    q, k, v = make_qkv(1, 1, 1, 5, 5, 16)
    f(q, k, v, config=SMALL)
    path = module_path(f.generated.digest)
    assert path.is_file() and path.read_text() == f.source
    assert f.module.__file__ == str(path)


# -- a kernel like the others: registry, CLI, torch twin ----------------------------------------
def test_torch_twin_equals_the_executor():
    cascade = load_cascade("relative-bias")
    f = compile_cascade(cascade)
    q, k, v = make_qkv(1, 2, 2, 9, 13, 16, torch.float32)
    bias = extra_tensor(("H", "P", "M"), {"H": 2, "P": 9, "M": 13}, 0)
    np.testing.assert_allclose(f.reference(q, k, v, BIAS=bias).numpy(),
                               executor_attention(cascade, q, k, v, BIAS=bias), atol=1e-12)


def test_compiled_cascade_registers_a_forward_and_a_backward_kernel():
    from einsim.kernels.registry import KERNELS
    from einsim.problem import Problem

    f = compile_cascade("relative-bias")
    forward, backward = (KERNELS[f"cascade:relative-bias:{f.form.content_hash[:10]}-{d}"]
                         for d in ("fwd", "bwd"))
    problem = Problem(batch=1, q_heads=2, q_len=20, kv_len=20, head_dim=16, dtype="fp16")
    assert backward.direction == "backward" and forward.search_space(problem)
    inputs = forward.make_inputs(problem, "fp16", DEVICE, 0)
    assert inputs["tensors"]["BIAS"].shape == (2, 20, 20)
    out, _ = forward.launch(SMALL, inputs)
    want, _ = forward.reference(inputs)
    assert (out.float() - want).abs().max() < TOLERANCE[torch.float16]
    inputs = backward.make_inputs(problem, "fp16", DEVICE, 0)
    grads = backward.launch(SMALL_BWD, inputs)
    for got, want in zip(grads, backward.reference(inputs)):
        assert (got.float() - want).abs().max() <= GRADIENT_TOLERANCE[torch.float16] * want.abs().max()
    # the template has every knob of the fused backward: dQ reduce-added, one launch
    assert not backward.config_reasons(FlashBackwardConfig(dq_atomic=True), problem)
    assert not backward.config_reasons(FlashBackwardConfig(one_launch=True), problem)
    causal = compile_cascade("attention-causal")
    assert causal.visible_pairs(Problem(batch=1, q_heads=1, q_len=130, kv_len=130, head_dim=64)) == 130 * 131 // 2


def test_kernels_compile_command_reports_and_shows_the_source(capsys):
    from einsim.cli import main

    assert main(["kernels", "compile", "attention-window"]) == 0
    report = capsys.readouterr().out
    assert "m >= p + M - P - window_left" in report and "tile ranges" in report
    assert "window_left, window_right" in report
    assert main(["kernels", "compile", "attention-causal", "--show-source"]) == 0
    assert "def forward_kernel(" in capsys.readouterr().out
    assert main(["kernels", "compile", "ffn"]) == 2
    assert "cannot compile cascade 'ffn'" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["relative-bias", "alibi"])
def test_gradients_of_float_extra_inputs_equal_the_executor(case):
    """dL/dBIAS ([H, P, M], summed over the batch) and dL/dSLOPE ([H], summed over the tile):
    the executor's central difference along a random direction of the input."""
    cascade = load_cascade(case)
    f = compile_cascade(cascade)
    extras = {name: cascade.inputs[name] for name in f.extra_inputs}
    b, h, nq, nk, d = 2, 2, 21, 35, 16
    q, k, v = make_qkv(b, h, h, nq, nk, d, torch.float16)
    sizes = {"H": h, "P": nq, "M": nk}
    ((name, ranks),) = extras.items()
    x = extra_tensor(ranks, sizes, 3).requires_grad_(True)
    out = f(q, k, v, config=SMALL, backward_config=SMALL_BWD, **{name: x})
    do = torch.randn_like(out)
    out.backward(do)
    assert x.grad is not None and x.grad.shape == x.shape
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).double()
    eps = 1e-4
    plus = executor_attention(cascade, q, k, v, **{name: x.detach().double() + eps * direction})
    minus = executor_attention(cascade, q, k, v, **{name: x.detach().double() - eps * direction})
    numeric = ((plus - minus) * do.double().cpu().numpy()).sum() / (2 * eps)
    analytic = (x.grad.double().cpu() * direction).sum().item()
    assert abs(analytic - numeric) <= 2e-2 * np.abs(x.grad.double().cpu().numpy()).sum() + 1e-3, \
        f"d{name}: {analytic} vs executor {numeric}"


def test_a_dq_reduce_add_config_refuses_gradients_of_extra_inputs():
    """Their gradients are summed by the dQ kernel, which a dq_atomic config does not run."""
    f = compile_cascade("alibi")
    q, k, v = make_qkv(1, 2, 2, 5, 5, 16, torch.float16)
    slope = torch.rand(2).requires_grad_(True)
    config = dataclasses.replace(SMALL_BWD, dq_atomic=True)
    out = f(q, k, v, config=SMALL, backward_config=config, SLOPE=slope)
    with pytest.raises(ConfigError, match="dq_atomic"):
        out.sum().backward()


def test_a_block_mask_is_built_once_and_reused_across_calls():
    f = compile_cascade(parse_cascade(VARIANTS["band-block-mask"][0], source="<band>"))
    q, k, v = make_qkv(1, 2, 2, 37, 45, 32)
    mask = f.block_mask(q, k, v, config=SMALL, backward_config=SMALL_BWD)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = f(q, k, v, config=SMALL, backward_config=SMALL_BWD, block_mask=mask)
    again = f(q, k, v, config=SMALL, backward_config=SMALL_BWD)
    assert torch.equal(out, again)
    out.sum().backward()
    assert q.grad is not None and not torch.isnan(q.grad).any()
    other = make_qkv(1, 2, 2, 30, 45, 32)
    with pytest.raises(ShapeError, match="block_mask was built for"):
        f(*other, config=SMALL, block_mask=mask)
    with pytest.raises(ConfigError, match="tile ranges"):
        compile_cascade("attention-causal").block_mask(*other)


FRONT_END_CHECK = r"""
import sys
import triton.language as tl
from triton._C.libtriton import ir
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from einsim.einsum_cascades import parse_cascade
from einsim.kernels import compile as compile_cascade

f = compile_cascade(parse_cascade(sys.stdin.read(), source="<everything>"))
module = f.module
pointers = {n: "*bf16" for n in ("Q", "K", "V", "Out", "DO", "DQ", "DK", "DV", "Q1", "K1", "V1",
                                 "DO1", "Q2", "K2", "V2", "DO2")}
pointers.update({"Lse": "*fp32", "Lse2": "*fp32", "Delta": "*fp32", "Lists": "*i32",
                 "Lists1": "*i32", "Lists2": "*i32",
                 "Any": "*i8", "Full": "*i8", "x_BIAS": "*fp32", "dx_0": "*fp32"})
floats = {"scale", "qk_scale", "grad_scale"}
common = dict(USE_TMA=False, DOT_FP32=False, IO_DTYPE=tl.bfloat16, BLOCK_D=64, BLOCK_DV=64)
target = GPUTarget("cuda", 90, 32)
backend = make_backend(target)
for fn, constexprs in (
        (module.forward_kernel, dict(common, WARP_SPECIALIZE=False, EXP_SPLIT=2, BLOCK_M=64, BLOCK_N=64)),
        (module.backward_dkdv_kernel, dict(common, BLOCK_M=32, BLOCK_N=64, DQ_ATOMIC=True,
                                           DQ_TMA=False)),
        (module.backward_dq_kernel, dict(common, BLOCK_M=64, BLOCK_N=32, EXTRA_GRADS=True)),
        (module.backward_one_launch_kernel, dict(common, BLOCK_M=32, BLOCK_N=64, BLOCK_M_DQ=64,
                                                 BLOCK_N_DQ=32, EXTRA_GRADS=True)),
        (module.block_classes_kernel, dict(BLOCK_M=64, BLOCK_N=64))):
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "fp32" if n in floats else "i32")
                 for n in fn.arg_names}
    source = ASTSource(fn, signature, {(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    options = backend.parse_options(source.parse_options())
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    text = str(source.make_ir(target, options, backend.get_codegen_implementation(options),
                              backend.get_module_map(), context))
    assert "tt.func" in text, text[:200]
    print("front end ok:", fn.__name__)
"""


@pytest.mark.skipif(not interpreting(), reason="on a GPU every kernel is compiled for real")
def test_generated_kernels_pass_tritons_compiler_front_end(tmp_path):
    """The interpreter runs the tests on CPU; Triton's compiler front end (AST -> TTIR, no GPU
    needed) runs here too, in a process without the interpreter, on the kernels of a variant
    with every part (a score function, an extra input and its gradient, a block mask): it
    rejects what the interpreter lets through (a global that is not a tl.constexpr, ...)."""
    import subprocess
    import sys
    from pathlib import Path

    text = variant("everything", "S[b,h,m1,m0,p] = 10 * sigmoid(QK[b,h,m1,m0,p] / 5) + BIAS[h,p,m1,m0]",
                   inputs=", BIAS: [H, P, M]", filters="abs(m - p - M + P) <= 40")
    env = dict(os.environ, TRITON_INTERPRET="0", EINSIM_COMPILE_DIR=str(tmp_path),
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    result = subprocess.run([sys.executable, "-c", FRONT_END_CHECK], input=text, env=env,
                            capture_output=True, text=True, timeout=240)
    if "No module named" in result.stderr and "triton" in result.stderr:  # pragma: no cover
        pytest.skip("Triton's compiler is not importable here")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("front end ok") == 5


def test_autotune_a_cascade_with_the_simulator(tmp_path, capsys):
    """`einsim autotune --cascade`: the compiled kernel's configs ranked by the one GPU cost model
    (a dry run: no GPU), the study named by the cascade's content."""
    from einsim.cli import main

    args = ["autotune", "--cascade", "attention-causal", "--shape", "1,16,4k,128", "--dry-run",
            "--trials", "2", "--no-progress", "--storage", f"sqlite:///{tmp_path / 'tune.db'}"]
    assert main(args) == 0
    report = capsys.readouterr().out
    assert "cascade:attention-causal:" in report and "2 trials" in report
    assert main(args[:6] + ["--backward", "--trials", "1", "--no-progress", "--storage",
                             f"sqlite:///{tmp_path / 'tune.db'}"]) == 0
    assert "-bwd on" in capsys.readouterr().out


def _library_softmax_cascades() -> list[str]:
    from einsim.einsum_cascades import library_names

    found = []
    for name in library_names():
        try:
            compile_cascade(name)
        except ConfigError:
            continue
        found.append(name)
    return found


# (q_len, kv_len, head_dim, query heads, key/value heads): one per library variant, in turn, so
# that every odd shape meets several variants and the interpreter's time stays bounded: length 1,
# 67 and 130 (past two 64-tiles), head dims 64/80/128, GQA 1 and 4, and more queries than keys
# (the bottom-right-aligned causal masks leave the first rows without keys: they output 0).
ODD_SHAPES = [(1, 1, 64, 2, 2), (67, 67, 80, 4, 1), (130, 130, 128, 1, 1), (67, 29, 64, 4, 1),
              (29, 37, 32, 2, 2)]


@pytest.mark.parametrize("index, name", list(enumerate(_library_softmax_cascades())))
def test_every_library_softmax_cascade_compiles_to_the_executors_function(index, name):
    """Whatever softmax-attention cascades the library holds (the notation stream adds
    variants): compiled, on an odd shape (ODD_SHAPES, in turn) with random extra inputs,
    forward equal to the executor, rows that see no key exactly 0; gradients (q, k, v and the
    float inputs the score reads) equal to the torch twin's autograd (the twin itself equals
    the executor: test_torch_twin_equals_the_executor)."""
    from einsim.kernels.compiler.registry import example_tensors
    from einsim.problem import Problem

    f = compile_cascade(name)
    roles = f.form.roles
    nq, nk, d, heads, kv_heads = ODD_SHAPES[index % len(ODD_SHAPES)]
    if roles.kv_head != roles.head:  # the cascade's own GQA: a group of 2
        heads, kv_heads = 4, 2
    q, k, v = make_qkv(1, heads, kv_heads, nq, nk, d)
    problem = Problem(batch=1, q_heads=heads, kv_heads=kv_heads, q_len=nq, kv_len=nk, head_dim=d)
    extras = example_tensors(f, problem, DEVICE, seed=2)
    differentiable = sorted(set(f.generated.grad_accesses))
    extras = {n: t.requires_grad_(True) if n in differentiable else t for n, t in extras.items()}
    leaves = [t.requires_grad_(True) for t in (q, k, v)]
    # the interpreter's time is per tile: real tile sizes past a few tiles
    config, backward_config = (SMALL, SMALL_BWD) if nq < 64 else (
        FlashConfig(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2),
        FlashBackwardConfig(BLOCK_M=32, BLOCK_N=64, BLOCK_M_DQ=64, BLOCK_N_DQ=32, num_warps=4,
                            num_stages=2))
    out = f(*leaves, config=config, backward_config=backward_config, **extras)
    reference = executor_attention(name, q, k, v, **{n: t.detach() for n, t in extras.items()})
    assert_close(out, reference, torch.float16)
    empty = torch.from_numpy((reference == 0).all(-1))
    assert (out.detach().cpu()[empty] == 0).all(), "rows that see no key must output 0"
    do = torch.randn_like(out)
    wrt = leaves + [extras[n] for n in differentiable]
    grads = torch.autograd.grad(out, wrt, do)
    twin_leaves = [t.detach().double().requires_grad_(True) for t in wrt]
    twin_extras = {n: t.detach().double() if t.is_floating_point() else t for n, t in extras.items()}
    twin_extras.update(dict(zip(differentiable, twin_leaves[3:])))
    twin = f.reference(*twin_leaves[:3], **twin_extras)
    twin_grads = torch.autograd.grad(twin, twin_leaves, do.double())
    for got, want in zip(grads, twin_grads):
        error = (got.double() - want).abs().max().item() / max(want.abs().max().item(), 1e-3)
        assert error <= GRADIENT_TOLERANCE[torch.float16], f"relative gradient error {error:.3g}"


def test_a_compiled_cascade_is_a_pytorch_operator_under_torch_compile():
    """Traced by torch.compile the call is one custom operator (no graph break), equal to eager,
    gradients of q, k, v and of a bias included; the forward operator passes opcheck's schema
    test."""
    from einsim.kernels.compiler.ops import operators

    f = compile_cascade("relative-bias")
    q, k, v = make_qkv(1, 2, 2, 17, 23, 16)
    bias = extra_tensor(("H", "P", "M"), {"H": 2, "P": 17, "M": 23}, 1)
    forward, _ = operators(f)
    # the schema check; torch.compile below runs the fake implementations
    torch.library.opcheck(forward, (q, k, v, [bias], None, None, None, None),
                          test_utils=("test_schema",))

    def model(q, k, v, bias):
        return (f(q, k, v, config=SMALL, backward_config=SMALL_BWD, BIAS=bias) * 2).sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, bias)]
    eager_leaves = [t.clone().requires_grad_(True) for t in (q, k, v, bias)]
    compiled(*leaves).backward()
    model(*eager_leaves).backward()
    for got, want in zip(leaves, eager_leaves):
        assert torch.allclose(got.grad.float(), want.grad.float(), atol=1e-2), "gradients differ"
