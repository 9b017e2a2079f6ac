"""What an expression computes: the value of a map, or the truth of a filter, at every point of
an iteration space, as float64 numpy arrays — the one evaluator the executor and filters share.

The empty-set conventions of docs/notation.md live here: (-inf) - (-inf) is -inf (so that exp of
it is 0), x / 0 is 0, and mod(x, 0) is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.special import erf

from einsim.einsum_cascades.expr import (
    Access, Binary, Call, Compare, Coordinate, Logical, Name, Not, Number, Unary,
)
from einsim.errors import SpecError

# Reads a tensor access at the current points: Access -> array broadcastable over the points.
Reader = Callable[[Access], np.ndarray]


def _elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def _gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _safe_divide(a, b):
    zero = np.equal(b, 0)
    return np.where(zero, 0.0, np.divide(a, np.where(zero, 1.0, b)))


def _mod(a, b):
    """Floored remainder a - b*floor(a/b), as Python's %; 0 where b is 0."""
    zero = np.equal(b, 0)
    return np.where(zero, 0.0, np.mod(a, np.where(zero, 1.0, b)))


FUNCTIONS: dict[str, Callable] = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "abs": np.abs, "tanh": np.tanh,
    "max": np.maximum, "min": np.minimum, "relu": lambda x: np.maximum(x, 0.0), "gelu": _gelu,
    "sigmoid": _sigmoid, "silu": lambda x: x * _sigmoid(x), "elu1": _elu1, "floor": np.floor, "mod": _mod,
    "ceil": np.ceil,
}

_COMPARE = {
    "<=": np.less_equal, "<": np.less, ">=": np.greater_equal, ">": np.greater,
    "==": np.equal, "!=": np.not_equal,
}


def evaluate(expr, coords: Mapping[str, np.ndarray], sizes: Mapping[str, int], read: Reader | None = None):
    """The value of `expr` at every point: `coords` maps a rank to its coordinate array (all
    broadcastable to the points), `sizes` binds rank sizes and symbols, `read` gathers tensors."""
    if isinstance(expr, Number):
        return expr.value
    if isinstance(expr, Coordinate):
        if expr.rank not in coords:
            raise SpecError(f"the coordinate {expr} is not known here (coordinates of {', '.join(coords) or 'nothing'})")
        return coords[expr.rank]
    if isinstance(expr, Name):
        if expr.name not in sizes:
            raise SpecError(f"no value for {expr.name!r}: not a bound rank size or symbol")
        return float(sizes[expr.name])
    if isinstance(expr, Access):
        if read is None:
            raise SpecError(f"{expr} reads a tensor, but no tensors were given")
        return read(expr)
    if isinstance(expr, Unary):
        return -evaluate(expr.operand, coords, sizes, read)
    if isinstance(expr, Binary):
        a, b = evaluate(expr.left, coords, sizes, read), evaluate(expr.right, coords, sizes, read)
        if expr.op == "+":
            return np.add(a, b)
        if expr.op == "*":
            return np.multiply(a, b)
        if expr.op == "-":
            # the max of an empty set minus itself stays -inf, so that exp() of it is 0
            return np.where(np.isneginf(a) & np.isneginf(b), -np.inf, np.subtract(a, b))
        return _safe_divide(a, b)
    if isinstance(expr, Call):
        if expr.func == "where":
            condition = holds(expr.args[0], coords, sizes, read)
            return np.where(condition, evaluate(expr.args[1], coords, sizes, read),
                            evaluate(expr.args[2], coords, sizes, read))
        args = [evaluate(arg, coords, sizes, read) for arg in expr.args]
        return FUNCTIONS[expr.func](*args)
    if isinstance(expr, (Compare, Logical, Not)):
        raise SpecError(f"the condition {expr} is not a value; use where({expr}, a, b)")
    raise SpecError(f"cannot evaluate {expr}")


def holds(condition, coords: Mapping[str, np.ndarray], sizes: Mapping[str, int], read: Reader | None = None):
    """Where `condition` (comparisons joined by and / or / not) is true, as a boolean array."""
    if isinstance(condition, Compare):
        left = evaluate(condition.left, coords, sizes, read)
        right = evaluate(condition.right, coords, sizes, read)
        return _COMPARE[condition.op](left, right)
    if isinstance(condition, Logical):
        combine = np.logical_and if condition.op == "and" else np.logical_or
        result = holds(condition.operands[0], coords, sizes, read)
        for operand in condition.operands[1:]:
            result = combine(result, holds(operand, coords, sizes, read))
        return result
    if isinstance(condition, Not):
        return np.logical_not(holds(condition.operand, coords, sizes, read))
    raise SpecError(f"{condition} is not a condition (a comparison such as m <= p)")


def compare(left, op: str, right):
    """`left op right` elementwise, op one of <= < >= > == !=."""
    return _COMPARE[op](left, right)
