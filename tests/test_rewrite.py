"""The FuseMax reassociation as an IR rewrite: a plain softmax-attention cascade (score terms,
filters, extra inputs included) becomes the 1-pass running-state cascade, which the pass analysis
gives 1 pass and the executor proves equal on random inputs; what is not a softmax is named."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from einsim.einsum_cascades import analyze_passes, execute, load_cascade, parse_cascade
from einsim.einsum_cascades.rewrite import find_softmax, reassociate
from einsim.errors import SpecError


def plain(score: str = "", filters: str = "", inputs: str = "", divide_last: bool = False, symbols: str = ""):
    """A plain (3-pass) softmax attention cascade with an optional score Einsum S."""
    x = "S" if score else "QK"
    softmax = (f"  - NV[b,h,f,p] = SN[b,h,m,p] * V[b,h,f,m]\n  - AV[b,h,f,p] = NV[b,h,f,p] / SD[b,h,p]\n"
               if divide_last else
               f"  - A[b,h,m,p] = SN[b,h,m,p] / SD[b,h,p]\n  - AV[b,h,f,p] = A[b,h,m,p] * V[b,h,f,m]\n")
    return parse_cascade(f"""name: plain
ranks: {{B: batch, H: heads, E: head_dim, F: v_head_dim, M: kv_len, P: q_len}}
symbols: {{batch: 1, heads: 1, head_dim: 4, v_head_dim: 3{symbols}}}
inputs: {{Q: [B, H, E, P], K: [B, H, E, M], V: [B, H, F, M]{inputs}}}
{f'filters: [{filters!r}]' if filters else ''}
einsums:
  - QK[b,h,m,p] = Q[b,h,e,p] * K[b,h,e,m]
{f'  - {score}' if score else ''}
  - GM[b,h,p] = max(m) {x}[b,h,m,p]
  - SN[b,h,m,p] = exp({x}[b,h,m,p] - GM[b,h,p])
  - SD[b,h,p] = SN[b,h,m,p]
{softmax}outputs: [AV]
""", source="plain.yaml")


def random_inputs(cascade, sizes, seed):
    rng = np.random.default_rng(seed)
    bound = cascade.bind(sizes)
    inputs = {name: rng.standard_normal(cascade.tensor_shape(name, bound)) for name in cascade.inputs}
    for name in ("DQ", "DK"):
        if name in inputs:
            inputs[name] = np.sort(rng.integers(0, 3, inputs[name].shape), axis=-1).astype(float)
    return inputs


def assert_same_function(original, rewritten, sizes, seed=0, block=3):
    inputs = random_inputs(original, sizes, seed)
    expected = execute(original, inputs, sizes)
    got = execute(rewritten, inputs, {**sizes, "block_m": block})
    for name in original.outputs:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-10)


def test_the_3pass_cascade_reassociates_to_fusemax():
    derived = reassociate(load_cascade("attention-3pass"))
    fusemax = load_cascade("fusemax")
    assert analyze_passes(derived).passes == 1
    assert [(e.output, e.output_indices, str(e.expression), e.reduce_op) for e in derived.einsums] == \
        [(e.output, e.output_indices, str(e.expression), e.reduce_op) for e in fusemax.einsums]
    assert dict(derived.partitions) == {"M": ("M1", "M0")} and derived.einsum("RM").init == -np.inf


@settings(max_examples=12, deadline=None)
@given(kv_len=st.integers(1, 13), q_len=st.integers(1, 9), block=st.integers(1, 6), seed=st.integers(0, 99))
def test_the_rewrite_computes_what_the_plain_cascade_computes(kv_len, q_len, block, seed):
    original = load_cascade("attention-3pass")
    sizes = {"kv_len": kv_len, "q_len": q_len, "batch": 2, "heads": 2, "head_dim": 3, "v_head_dim": 2}
    assert_same_function(original, reassociate(original), sizes, seed, block)


VARIANTS = {
    "alibi causal": dict(score="S[b,h,m,p] = QK[b,h,m,p] - SLOPE[h] * (p + M - P - m)", filters="m <= p + M - P",
                         inputs=", SLOPE: [H]"),
    "softcap": dict(score="S[b,h,m,p] = softcap * tanh(QK[b,h,m,p] / softcap)", symbols=", softcap: 1.5"),
    "sinks + window, divide last": dict(filters="m <= p + M - P and (m < 2 or m > p + M - P - 3)",
                                        divide_last=True),
    "packed documents": dict(filters="DQ[b,p] == DK[b,m] and m <= p + M - P", inputs=", DQ: [B, P], DK: [B, M]"),
    "bias and where": dict(score="S[b,h,m,p] = where(mod(m, 3) == 0, QK[b,h,m,p] + BIAS[h,p,m], QK[b,h,m,p])",
                           inputs=", BIAS: [H, P, M]"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("kv_len, q_len, block", [(11, 7, 4), (7, 11, 3), (1, 1, 2)])
def test_variants_with_score_terms_filters_and_inputs_reassociate(name, kv_len, q_len, block):
    original = plain(**VARIANTS[name])
    rewritten = reassociate(original)
    assert analyze_passes(original).passes >= 2 and analyze_passes(rewritten).passes == 1
    sizes = {"kv_len": kv_len, "q_len": q_len, "batch": 2, "heads": 3}
    assert_same_function(original, rewritten, sizes, seed=kv_len, block=block)


@pytest.mark.parametrize("name", ["flat", "attention-3pass"])
def test_library_plain_cascades_reassociate(name):
    original = load_cascade(name)
    rewritten = reassociate(original)
    assert analyze_passes(rewritten).passes == 1
    assert_same_function(original, rewritten, {"kv_len": 10, "q_len": 9, "block_p": 4, "head_dim": 3, "v_head_dim": 2})


def test_grouped_query_attention_reassociates():
    text = """name: gqa-plain
ranks: {H: 4, G: 2, E: 3, F: 2, M: 9, P: 5}
partitions: {H: [G, R]}
inputs: {Q: [H, E, P], K: [G, E, M], V: [G, F, M]}
einsums:
  - QK[g,r,m,p] = Q[g,r,e,p] * K[g,e,m]
  - GM[g,r,p] = max(m) QK[g,r,m,p]
  - SN[g,r,m,p] = exp(QK[g,r,m,p] - GM[g,r,p])
  - SD[g,r,p] = SN[g,r,m,p]
  - A[g,r,m,p] = SN[g,r,m,p] / SD[g,r,p]
  - AV[h,f,p] = A[h,m,p] * V[g,f,m]
outputs: [AV]
"""
    original = parse_cascade(text)
    rewritten = reassociate(original)
    assert analyze_passes(rewritten).passes == 1
    assert_same_function(original, rewritten, {}, block=4)


def test_the_softmax_is_found_by_structure_not_by_names():
    text = """name: renamed
ranks: {N: 7, T: 4, D: 3, W: 2}
inputs: {X: [D, T], Y: [D, N], Z: [W, N]}
einsums:
  - SIM[n,t] = X[d,t] * Y[d,n]
  - TOP[t] = max(n) SIM[n,t]
  - EX[n,t] = exp(SIM[n,t] - TOP[t])
  - TOT[t] = EX[n,t]
  - WZ[w,t] = EX[n,t] * Z[w,n]
  - OUT[w,t] = WZ[w,t] / TOT[t]
outputs: [OUT]
"""
    original = parse_cascade(text)
    found = find_softmax(original)
    assert (found.key, found.score, found.divide_last) == ("N", "SIM", True)
    rewritten = reassociate(original)
    assert analyze_passes(rewritten, rank="N").passes == 1
    assert_same_function(original, rewritten, {}, block=2)


@pytest.mark.parametrize(
    "cascade, message",
    [
        (lambda: load_cascade("linear-attention"), "no Einsum takes the max of one tensor over one rank"),
        (lambda: load_cascade("fusemax"), "which is partitioned already: the cascade is not in the plain form"),
        (lambda: plain(score="S[b,h,m,p] = QK[b,h,m,p] - MX[b,h,p]\n  - MX[b,h,p] = max(m) QK[b,h,m,p]"),
         r"MX\[b,h,p\] = max\(m\) QK\[b,h,m,p\]': it reduces over m before the softmax"),
    ],
)
def test_what_is_not_plain_softmax_is_named(cascade, message):
    with pytest.raises(SpecError, match=message):
        reassociate(cascade())


def test_a_softmax_piece_that_is_not_there_names_the_einsum():
    bad = """name: bad
ranks: {M: 5, P: 3, E: 2, F: 2}
inputs: {Q: [E, P], K: [E, M], V: [F, M]}
einsums:
  - QK[m,p] = Q[e,p] * K[e,m]
  - GM[p] = max(m) QK[m,p]
  - SN[m,p] = exp(QK[m,p] - GM[p])
  - SD[p] = SN[m,p]
  - AV[f,p] = SN[m,p] * V[f,m] / SD[p]
outputs: [AV]
"""
    with pytest.raises(SpecError, match=r"<string>:8: Einsum 'SD\[p\] = SN\[m,p\]': nothing divides SN by SD"):
        reassociate(parse_cascade(bad))
    own_filter = bad.replace("  - SD[p] = SN[m,p]\n", "  - SD[p] = SN[m,p] where m <= p\n").replace(
        "SN[m,p] * V[f,m] / SD[p]", "NV[f,p] / SD[p]\n  - NV[f,p] = SN[m,p] * V[f,m]")
    with pytest.raises(SpecError, match=r"its own filter 'where m <= p' is part of the softmax; write it in filters:"):
        reassociate(parse_cascade(own_filter))


MASK_TERMS = ["m", "p", "p + M - P", "2 * m - p", "floor(m / 3)", "mod(p, 4)", "abs(m - p)", "max(m, p) - 3"]
SCORE_TERMS = ["QK[b,h,m,p]", "QK[b,h,m,p] * 0.5 - m / 7", "3 * tanh(QK[b,h,m,p] / 3)",
               "where(mod(m + p, 3) == 0, QK[b,h,m,p], -QK[b,h,m,p])", "QK[b,h,m,p] + log1p(abs(QK[b,h,m,p]))"]


@st.composite
def masks(draw, depth=0):
    if depth < 2 and draw(st.booleans()):
        op = draw(st.sampled_from(["and", "or"]))
        return f"({draw(masks(depth + 1))}) {op} ({draw(masks(depth + 1))})"
    comparison = draw(st.sampled_from(["<=", "<", ">=", ">", "==", "!="]))
    return f"{draw(st.sampled_from(MASK_TERMS))} {comparison} {draw(st.sampled_from(MASK_TERMS))} + {draw(st.integers(-4, 4))}"


@settings(max_examples=10, deadline=None)
@given(mask=masks(), score=st.sampled_from(SCORE_TERMS), divide_last=st.booleans(), kv_len=st.integers(1, 11),
       q_len=st.integers(1, 9), block=st.integers(1, 5), seed=st.integers(0, 99))
def test_random_masks_and_scores_reassociate_to_the_same_function(mask, score, divide_last, kv_len, q_len, block,
                                                                  seed):
    original = plain(score=f"S[b,h,m,p] = {score}", filters=mask, divide_last=divide_last)
    rewritten = reassociate(original)
    assert analyze_passes(rewritten).passes == 1
    assert_same_function(original, rewritten, {"kv_len": kv_len, "q_len": q_len, "batch": 1, "heads": 2}, seed, block)
