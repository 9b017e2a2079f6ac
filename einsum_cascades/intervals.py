"""Interval arithmetic over the expression tree: bounds of a filter's value over a box of
coordinates, and whether the filter surely holds or surely fails on the whole box.

Sound, not always tight: a box it cannot decide (a mod that wraps, a tensor read it cannot
bound) is "undecided", and the callers (tiles.py) enumerate those boxes point by point, so the
classification they report is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import reduce

import numpy as np

from einsim.einsum_cascades.expr import (
    Access, Binary, Call, Compare, Coordinate, Logical, Name, Not, Number, Unary,
)
from einsim.errors import SpecError

Bounds = tuple[np.ndarray, np.ndarray]  # (lowest, highest) value over each box
# Bounds of a tensor access over the boxes: Access -> (low, high), or None when it cannot tell.
BoundsReader = Callable[[Access], "Bounds | None"]

_INCREASING = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "tanh": np.tanh,
    "floor": np.floor, "ceil": np.ceil, "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "elu1": lambda x: np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0))),
}
_UNBOUNDED = (-np.inf, np.inf)


def is_integral(expr) -> bool:
    """True when `expr` can only take integer values: coordinates, sizes, integers, + - *,
    floor, mod, abs, max, min of such (so a mod by B is at most B - 1)."""
    if isinstance(expr, Number):
        return float(expr.value).is_integer()
    if isinstance(expr, (Coordinate, Name)):
        return True
    if isinstance(expr, Unary):
        return is_integral(expr.operand)
    if isinstance(expr, Binary):
        return expr.op != "/" and is_integral(expr.left) and is_integral(expr.right)
    if isinstance(expr, Call):
        if expr.func in ("floor", "ceil"):
            return True
        return expr.func in ("mod", "abs", "max", "min") and all(is_integral(a) for a in expr.args)
    return False


def bounds(expr, box: Mapping[str, Bounds], sizes: Mapping[str, int], read: BoundsReader | None = None) -> Bounds:
    """Lowest and highest value of `expr` over each box; `box` maps a rank to the (low, high)
    of its coordinate (inclusive), arrays broadcastable over the boxes."""
    if isinstance(expr, Number):
        return expr.value, expr.value
    if isinstance(expr, Coordinate):
        if expr.rank not in box:
            raise SpecError(f"the coordinate {expr} is not known here")
        return box[expr.rank]
    if isinstance(expr, Name):
        value = float(sizes[expr.name])
        return value, value
    if isinstance(expr, Access):
        found = read(expr) if read is not None else None
        return found if found is not None else _UNBOUNDED
    if isinstance(expr, Unary):
        lo, hi = bounds(expr.operand, box, sizes, read)
        return np.negative(hi), np.negative(lo)
    if isinstance(expr, Binary):
        (a, b), (c, d) = bounds(expr.left, box, sizes, read), bounds(expr.right, box, sizes, read)
        if expr.op == "+":
            return np.add(a, c), np.add(b, d)
        if expr.op == "-":
            return np.subtract(a, d), np.subtract(b, c)
        if expr.op == "*":
            return _hull(a * c, a * d, b * c, b * d)
        # a / b, where a zero divisor gives 0 (values.py): undecided if the divisor may be 0
        zero = (np.asarray(c) <= 0) & (np.asarray(d) >= 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            lo, hi = _hull(a / c, a / d, b / c, b / d)
        return np.where(zero, -np.inf, lo), np.where(zero, np.inf, hi)
    if isinstance(expr, Call):
        return _call_bounds(expr, box, sizes, read)
    raise SpecError(f"{expr} is not a value")


def _hull(*candidates) -> Bounds:
    with np.errstate(invalid="ignore"):
        lo, hi = reduce(np.minimum, candidates), reduce(np.maximum, candidates)
    undefined = np.isnan(lo) | np.isnan(hi)  # 0 * inf: no bound
    return np.where(undefined, -np.inf, lo), np.where(undefined, np.inf, hi)


def _call_bounds(expr: Call, box, sizes, read) -> Bounds:
    func = expr.func
    if func == "where":
        always, never = truth(expr.args[0], box, sizes, read)
        (a, b), (c, d) = bounds(expr.args[1], box, sizes, read), bounds(expr.args[2], box, sizes, read)
        return (np.where(always, a, np.where(never, c, np.minimum(a, c))),
                np.where(always, b, np.where(never, d, np.maximum(b, d))))
    args = [bounds(arg, box, sizes, read) for arg in expr.args]
    if func in _INCREASING:
        f = _INCREASING[func]
        with np.errstate(all="ignore"):
            return f(np.asarray(args[0][0], dtype=float)), f(np.asarray(args[0][1], dtype=float))
    if func == "abs":
        lo, hi = args[0]
        return (np.where(lo >= 0, lo, np.where(hi <= 0, -hi, 0.0)),
                np.where(lo >= 0, hi, np.where(hi <= 0, -lo, np.maximum(-lo, hi))))
    if func == "max":
        return np.maximum(args[0][0], args[1][0]), np.maximum(args[0][1], args[1][1])
    if func == "min":
        return np.minimum(args[0][0], args[1][0]), np.minimum(args[0][1], args[1][1])
    if func == "mod":
        (a, b), (c, d) = args
        # by a positive constant: monotone within one period of the dividend, else [0, c)
        constant = (np.asarray(c) == np.asarray(d)) & (np.asarray(c) > 0)
        divisor = np.where(constant, c, 1.0)
        same_period = np.floor(a / divisor) == np.floor(b / divisor)
        top = np.where(constant, c, d) - (1 if is_integral(expr.args[0]) and is_integral(expr.args[1]) else 0)
        lo = np.where(constant & same_period, np.mod(a, divisor), 0.0)
        hi = np.where(constant & same_period, np.mod(b, divisor), top)
        positive = np.asarray(c) > 0
        return np.where(positive, lo, -np.inf), np.where(positive, hi, np.inf)
    return _UNBOUNDED  # gelu, silu: not monotone; filters do not use them


def truth(condition, box: Mapping[str, Bounds], sizes: Mapping[str, int], read: BoundsReader | None = None):
    """(always, never): boolean arrays, True where the condition holds at every point of the
    box / at no point of it. Both False: undecided."""
    if isinstance(condition, Compare):
        (a, b) = bounds(condition.left, box, sizes, read)
        (c, d) = bounds(condition.right, box, sizes, read)
        op = condition.op
        if op == "<=":
            return np.asarray(b <= c), np.asarray(a > d)
        if op == "<":
            return np.asarray(b < c), np.asarray(a >= d)
        if op == ">=":
            return np.asarray(a >= d), np.asarray(b < c)
        if op == ">":
            return np.asarray(a > d), np.asarray(b <= c)
        equal = (np.asarray(a) == b) & (np.asarray(c) == d) & (np.asarray(a) == c)
        apart = (np.asarray(b) < c) | (np.asarray(a) > d)
        return (equal, apart) if op == "==" else (apart, equal)
    if isinstance(condition, Logical):
        parts = [truth(c, box, sizes, read) for c in condition.operands]
        always, never = [p[0] for p in parts], [p[1] for p in parts]
        if condition.op == "and":
            return reduce(np.logical_and, always), reduce(np.logical_or, never)
        return reduce(np.logical_or, always), reduce(np.logical_and, never)
    if isinstance(condition, Not):
        always, never = truth(condition.operand, box, sizes, read)
        return never, always
    raise SpecError(f"{condition} is not a condition")
