"""Every function a cascade may call has a stated cost in primitives (simulator/functions.py,
docs/simulator.md §3.3), and the spatial model binds and prices it by that expansion."""

from __future__ import annotations

import pytest

from einsim.einsum_cascades.expr import FUNCTIONS, SIZE_ONLY_FUNCTIONS, Access, Call
from einsim.einsum_cascades.ir import map_operations
from einsim.errors import ConfigError
from einsim.problem import Problem
from einsim.simulator.functions import FUNCTION_COSTS, PRIMITIVES, expand, primitive_counts
from einsim.simulator.simulate import simulate
from einsim.einsum_cascades.loader import library_dir, parse_cascade
from einsim.targets import load_target

SCORE = Problem(batch=1, q_heads=2, q_len=1024, kv_len=1024, head_dim=64)


def _softcap(expression: str) -> str:
    """The library's fusemax with its scores transformed by `expression` of the raw scores QKR
    (one more Einsum, QK, that binds and costs like any other)."""
    text = (library_dir() / "fusemax.yaml").read_text()
    line = "  - QK[b,h,m1,m0,p]   = Q[b,h,e,p] * K[b,h,e,m1,m0]"
    assert line in text
    return text.replace(line, f"  - QKR[b,h,m1,m0,p] = Q[b,h,e,p] * K[b,h,e,m1,m0]\n  - QK[b,h,m1,m0,p] = {expression}")


def test_every_function_the_notation_allows_has_a_cost():
    for name, arity in FUNCTIONS.items():
        if name in SIZE_ONLY_FUNCTIONS:
            continue
        call = Call(name, tuple(Access(f"X{i}", ()) for i in range(arity)))
        for kind in map_operations(call):  # the operation kinds the IR counts for it
            assert set(expand(kind)) <= set(PRIMITIVES), name


def test_an_unknown_operation_is_a_named_error_not_free():
    with pytest.raises(ConfigError, match="no cost for the operation 'frobnicate'"):
        primitive_counts({"frobnicate": 3})


@pytest.mark.parametrize("function, primitives", [
    ("sigmoid", {"exp": 1, "add": 1, "div": 1}),
    ("silu", {"exp": 1, "add": 1, "div": 1}),
    ("tanh", {"mul": 1, "exp": 1, "add": 1, "div": 1, "sub": 1}),
])
def test_special_functions_expand_to_the_formula_they_compute(function, primitives):
    assert FUNCTION_COSTS[function] == primitives


@pytest.mark.parametrize("target", ["fusemax-cloud", "flat-cloud"])
def test_sigmoid_costs_an_exp_an_add_and_a_divide_on_the_array_that_can_divide(target):
    plain = simulate(parse_cascade(_softcap("QKR[b,h,m1,m0,p] * 2")), SCORE, target)
    capped = simulate(parse_cascade(_softcap("sigmoid(QKR[b,h,m1,m0,p])")), SCORE, target)
    sc = {e.einsum: e for e in capped.per_einsum}["QK"]
    points = SCORE.batch * SCORE.q_heads * SCORE.q_len * SCORE.kv_len
    assert sc.compute_ops == {"exp": points, "add": points, "div": points}
    assert sc.unit == "pe_1d"  # it divides: FuseMax's 2D PEs have no divider
    t = load_target(target)
    exp = t.unit("exp")
    per_exp = (exp.ops_per_exp * t.energy_per_op("pe_1d", "bf16", "mac") if exp.via
               else t.energy_per_op(exp, "bf16"))
    per_point = per_exp + t.energy_per_op("pe_1d", "bf16", "add") + t.energy_per_op("pe_1d", "bf16", "div")
    # its energy is its primitives at the target's tables, plus its register-file accesses (2 reads and a
    # write per PE-cycle: up to 10 % when the exp takes 6 MAC cycles of a 1D PE) and buffer accesses
    assert points * per_point <= sc.energy_j <= 1.12 * points * per_point
    assert capped.latency_s > plain.latency_s


@pytest.mark.parametrize("target", ["fusemax-cloud", "h100-sxm"])
def test_binding_follows_the_operation_not_its_spelling(target):
    # a soft cap's division by a constant is a multiply by its reciprocal
    divided = simulate(parse_cascade(_softcap("QKR[b,h,m1,m0,p] / 15")), SCORE, target)
    multiplied = simulate(parse_cascade(_softcap("QKR[b,h,m1,m0,p] * 0.0666666667")), SCORE, target)
    rows = [{e.einsum: e for e in estimate.per_einsum}["QK"] for estimate in (divided, multiplied)]
    assert rows[0].unit == rows[1].unit and rows[0].compute_ops == rows[1].compute_ops == {"mul": rows[0].compute_ops["mul"]}
    assert divided.latency_s == multiplied.latency_s and divided.energy_j == multiplied.energy_j
