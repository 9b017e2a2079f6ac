"""Expressions of the notation: coordinates as values, the functions (tanh, where, floor, mod,
log1p), conditions with and / or / not and parentheses, and what each counts as an operation."""

import re

import numpy as np
import pytest

from einsim.einsum_cascades import execute, parse_cascade
from einsim.einsum_cascades.expr import Coordinate, Logical, Not
from einsim.einsum_cascades.parser import parse_condition
from einsim.errors import SpecError


def cascade(einsums, ranks="{E: 3, M: 7, P: 5}", inputs="{Q: [E, P], K: [E, M]}", outputs="S", extra=""):
    body = "".join(f"  - {line}\n" for line in einsums)
    return parse_cascade(
        f"name: t\nranks: {ranks}\n{extra}inputs: {inputs}\neinsums:\n{body}outputs: [{outputs}]\n", source="t.yaml"
    )


def random_qk(seed=0, e=3, m=7, p=5):
    rng = np.random.default_rng(seed)
    return {"Q": rng.standard_normal((e, p)), "K": rng.standard_normal((e, m))}


def test_coordinates_are_values_in_a_map():
    c = cascade(["QK[m,p] = Q[e,p] * K[e,m]", "S[m,p] = QK[m,p] - 0.25 * (p + M - P - m)"])
    inputs = random_qk()
    got = execute(c, inputs)["S"]
    m, p = np.arange(7)[:, None], np.arange(5)[None, :]
    expected = inputs["K"].T @ inputs["Q"] - 0.25 * (p + 7 - 5 - m)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert isinstance(c.einsum("S").expression.right.right.right, Coordinate)


def test_a_partitioned_coordinate_is_the_absolute_position():
    # m = m1*M0 + m0; the tail tile's positions past M are no points (left at 0)
    c = cascade(["S[m1,m0,p] = m + 100 * p + 0 * K[0,m1,m0] * Q[0,p]"], ranks="{E: 1, M: 7, P: 2, M0: 3}",
                extra="partitions: {M: [M1, M0]}\n")
    got = execute(c, random_qk(e=1, m=7, p=2))["S"]
    assert got.shape == (3, 3, 2)
    flat = got.reshape(9, 2)
    np.testing.assert_array_equal(flat[:7], np.arange(7)[:, None] + 100 * np.arange(2)[None, :])
    np.testing.assert_array_equal(flat[7:], 0)


def test_a_part_of_an_iterated_rank_is_a_coordinate_too():
    # p1 = p // P0 when the Einsum iterates p
    c = cascade(["S[m,p] = p1 + 0 * K[0,m] * Q[0,p]"], ranks="{E: 1, M: 2, P: 7, P0: 3}",
                extra="partitions: {P: [P1, P0]}\n")
    got = execute(c, random_qk(e=1, m=2, p=7))["S"]
    np.testing.assert_array_equal(got, np.broadcast_to(np.arange(7) // 3, (2, 7)))


@pytest.mark.parametrize(
    "text, formula",
    [
        ("tanh(QK[m,p] / 2) * 2", lambda s, m, p: np.tanh(s / 2) * 2),
        ("log1p(abs(QK[m,p]))", lambda s, m, p: np.log1p(np.abs(s))),
        ("where(m <= p, QK[m,p], -inf)", lambda s, m, p: np.where(m <= p, s, -np.inf)),
        ("where(m < 2 or not (m >= p - 1), QK[m,p], 0)", lambda s, m, p: np.where((m < 2) | ~(m >= p - 1), s, 0)),
        ("floor(m / 3) - mod(p, 3) + mod(0 - m, 4)", lambda s, m, p: np.floor(m / 3) - p % 3 + (-m) % 4),
        ("floor(QK[m,p] * 4)", lambda s, m, p: np.floor(s * 4)),
    ],
)
def test_functions_compute_their_formula(text, formula):
    c = cascade(["QK[m,p] = Q[e,p] * K[e,m]", f"S[m,p] = {text}"])
    inputs = random_qk(seed=3)
    scores = inputs["K"].T @ inputs["Q"]
    m, p = np.arange(7)[:, None], np.arange(5)[None, :]
    np.testing.assert_allclose(execute(c, inputs)["S"], formula(scores, m, p), rtol=0, atol=1e-12)


def test_mod_is_the_floored_remainder_and_mod_by_zero_is_zero():
    c = cascade(["S[m,p] = mod(QK[m,p], 0) + mod(m - 5, 3)", "QK[m,p] = Q[e,p] * K[e,m]"])
    got = execute(c, random_qk())["S"]
    np.testing.assert_array_equal(got[:, 0], [1, 2, 0, 1, 2, 0, 1])  # (m - 5) mod 3, never negative


@pytest.mark.parametrize(
    "text, ops",
    [
        # a division by a constant is a multiply by its reciprocal (binding follows the operation)
        ("tanh(QK[m,p] / 30) * 30", {"tanh", "mul"}),
        ("where(m <= p, QK[m,p], -inf)", {"select", "cmp"}),
        ("QK[m,p] - 0.5 * (p + M - P - m)", {"sub", "mul", "add"}),
        ("floor(m / 4) + mod(p, 4) + log1p(QK[m,p])", {"floor", "mul", "mod", "log1p", "add"}),
    ],
)
def test_each_function_counts_one_operation_per_point(text, ops):
    c = cascade(["QK[m,p] = Q[e,p] * K[e,m]", f"S[m,p] = {text}"])
    counts = c.einsum("S").operation_counts(c.bind({}))
    assert set(counts) == ops
    assert counts.get("select", 35) == counts.get("tanh", 35) == 35


def test_constants_count_nothing():
    # M - P and 1/sqrt(E) are one number per launch; only the per-point sub and mul count
    c = cascade(["QK[m,p] = Q[e,p] * K[e,m]", "S[m,p] = QK[m,p] * (1 / sqrt(E)) - (M - P)"])
    assert c.einsum("S").map_ops == ("mul", "sub")
    c = cascade(["QK[m,p] = Q[e,p] * K[e,m]", "S[m,p] = QK[m,p] - 2 * (m - 1)"])
    assert c.einsum("S").map_ops == ("sub", "mul", "sub")


def test_conditions_parse_with_and_binding_tighter_than_or():
    condition = parse_condition("m < 4 or m >= p - 2 and not (p == 3 or m != 1)")
    assert isinstance(condition, Logical) and condition.op == "or"
    assert isinstance(condition.operands[1].operands[1], Not)
    assert str(condition) == "m < 4 or m >= p - 2 and not (p == 3 or m != 1)"
    assert str(parse_condition("(m + 1) * 2 < p")) == "(m + 1) * 2 < p"
    assert str(parse_condition("(m < 4 or m > 5) and (p - 1) > 2")) == "(m < 4 or m > 5) and p - 1 > 2"


@pytest.mark.parametrize(
    "text, message",
    [
        ("m < 4 or", "1:9: expected a tensor access"),
        ("(m < 4 or m > 5", "expected ')' closing the parenthesis"),
        ("m < 4 m > 2", "expected 'and', 'or' or the end of the filter"),
        ("m + 4", "expected a comparison"),
    ],
)
def test_condition_syntax_errors_say_what_was_expected(text, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_condition(text)


@pytest.mark.parametrize(
    "line, message",
    [
        ("S[p] = max(m) QK[m,p] + m1", "unknown name 'm1': not the index variable of a declared rank"),
        ("S[p] = Q[0,p] * m", "reads the coordinate m, which this Einsum does not iterate (it iterates p)"),
        ("S[m,p] = where(QK[m,p], 1, 0)", "expected a comparison"),
        ("S[m,p] = where(m < p, 1)", "where takes 3 argument(s), got 2"),
        ("S[m,p] = QK[m,p] + x", "unknown name 'x': not the index variable of a declared rank"),
        ("S[m,p] = QK[m,p] + not", "expected a tensor access, a number, a function call or '('"),
    ],
)
def test_expression_errors_name_the_einsum(line, message):
    with pytest.raises(SpecError, match="t.yaml") as error:
        cascade(["QK[m,p] = Q[e,p] * K[e,m]", line])
    assert message in str(error.value)


def test_a_symbol_named_like_an_index_variable_is_refused():
    with pytest.raises(SpecError, match="symbol 'm' is the index variable of rank M; rename the symbol"):
        cascade(["S[m,p] = Q[e,p] * K[e,m]"], ranks="{E: 3, M: m, P: 5}")


def test_the_where_filter_of_an_einsum_may_follow_a_where_function():
    c = cascade(["QK[m,p] = Q[e,p] * K[e,m]", "S[m,p] = where(m < 2, QK[m,p], 1) where (m <= p or m == 6)"])
    (flt,) = c.einsum("S").filters
    assert flt.text == "(m <= p or m == 6)" and flt.ranks == ("M", "P")
    inputs = random_qk(seed=5)
    scores = inputs["K"].T @ inputs["Q"]
    m, p = np.arange(7)[:, None], np.arange(5)[None, :]
    expected = np.where((m <= p) | (m == 6), np.where(m < 2, scores, 1), 0)
    np.testing.assert_allclose(execute(c, inputs)["S"], expected, rtol=0, atol=1e-12)
