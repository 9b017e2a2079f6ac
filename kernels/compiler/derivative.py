"""The derivative of a score expression with respect to one of its leaves (QK, or an extra float
input), derived symbolically from the expression tree and simplified, so that the backward of any
variant is generated rather than written by hand."""

from __future__ import annotations

import math

from einsim.einsum_cascades.expr import Access, Binary, Call, Compare, Name, Number, Unary
from einsim.errors import ConfigError
from einsim.kernels.compiler.frontend import QKLeaf, children, nodes

ZERO, ONE = Number(0.0), Number(1.0)


def _number(node) -> float | None:
    return node.value if isinstance(node, Number) else None


def add(a, b):
    if _number(a) == 0.0:
        return b
    if _number(b) == 0.0:
        return a
    if isinstance(a, Number) and isinstance(b, Number):
        return Number(a.value + b.value)
    return Binary("+", a, b)


def sub(a, b):
    if _number(b) == 0.0:
        return a
    if _number(a) == 0.0:
        return neg(b)
    if isinstance(a, Number) and isinstance(b, Number):
        return Number(a.value - b.value)
    return Binary("-", a, b)


def mul(a, b):
    if _number(a) == 0.0 or _number(b) == 0.0:
        return ZERO
    if _number(a) == 1.0:
        return b
    if _number(b) == 1.0:
        return a
    if isinstance(a, Number) and isinstance(b, Number):
        return Number(a.value * b.value)
    return Binary("*", a, b)


def div(a, b):
    if _number(a) == 0.0:
        return ZERO
    if _number(b) == 1.0:
        return a
    if isinstance(a, Number) and isinstance(b, Number) and b.value != 0:
        return Number(a.value / b.value)
    return Binary("/", a, b)


def neg(a):
    if isinstance(a, Number):
        return Number(-a.value)
    if isinstance(a, Unary) and a.op == "-":
        return a.operand
    return Unary("-", a)


def where(condition, a, b):
    if _number(a) is not None and _number(a) == _number(b):
        return a
    return Call("where", (condition, a, b))


def call(func, *args):
    return Call(func, tuple(args))


def depends_on(tree, leaf) -> bool:
    return any(node == leaf for node in nodes(tree))


# Functions whose derivative is 0 wherever it exists (steps); their argument may be anything.
_PIECEWISE_CONSTANT = ("floor", "ceil", "mod", "sign")


def derivative(tree, leaf):
    """d tree / d leaf as a simplified tree (leaf: QKLeaf() or an extra input's Access)."""
    if tree == leaf:
        return ONE
    if not depends_on(tree, leaf):
        return ZERO
    if isinstance(tree, Unary) and tree.op == "-":
        return neg(derivative(tree.operand, leaf))
    if isinstance(tree, Binary):
        a, b = tree.left, tree.right
        da, db = derivative(a, leaf), derivative(b, leaf)
        if tree.op == "+":
            return add(da, db)
        if tree.op == "-":
            return sub(da, db)
        if tree.op == "*":
            return add(mul(da, b), mul(a, db))
        if tree.op == "/":
            if _number(db) == 0.0:
                return div(da, b)
            return div(sub(mul(da, b), mul(a, db)), mul(b, b))
    if isinstance(tree, Call):
        name, args = tree.func, tree.args
        if name in _PIECEWISE_CONSTANT:
            return ZERO
        if name == "where":
            condition, a, b = args
            return where(condition, derivative(a, leaf), derivative(b, leaf))
        if name in ("max", "min"):
            a, b = args
            op = ">=" if name == "max" else "<="
            return where(Compare(op, a, b), derivative(a, leaf), derivative(b, leaf))
        (a,) = args if len(args) == 1 else (None,)
        if a is None:
            raise ConfigError(f"the score's {name}() has no derivative rule for {len(args)} arguments")
        da = derivative(a, leaf)
        outer = {
            "exp": lambda: tree,
            "log": lambda: div(ONE, a),
            "log1p": lambda: div(ONE, add(ONE, a)),
            "sqrt": lambda: div(Number(0.5), tree),
            "abs": lambda: where(Compare(">=", a, ZERO), ONE, Number(-1.0)),
            "relu": lambda: where(Compare(">", a, ZERO), ONE, ZERO),
            "tanh": lambda: sub(ONE, mul(tree, tree)),
            "sigmoid": lambda: mul(tree, sub(ONE, tree)),
            "silu": lambda: add(call("sigmoid", a),
                                mul(a, mul(call("sigmoid", a), sub(ONE, call("sigmoid", a))))),
            "gelu": lambda: add(mul(Number(0.5), add(ONE, call("erf", mul(a, Number(1 / math.sqrt(2)))))),
                                mul(a, mul(Number(1 / math.sqrt(2 * math.pi)),
                                           call("exp", mul(Number(-0.5), mul(a, a)))))),
            "erf": lambda: mul(Number(2 / math.sqrt(math.pi)), call("exp", neg(mul(a, a)))),
            "elu1": lambda: where(Compare(">", a, ZERO), ONE, call("exp", a)),
        }
        if name not in outer:
            raise ConfigError(f"the score uses {name}(), which has no derivative rule in the "
                              "compiler; supported: " + ", ".join(sorted(outer) + list(_PIECEWISE_CONSTANT)
                                                                  + ["where", "max", "min"]))
        return mul(outer[name](), da)
    if isinstance(tree, (QKLeaf, Access, Name, Number)):
        return ZERO
    raise ConfigError(f"cannot differentiate {type(tree).__name__} node {tree} of the score")


def scaled(tree, factor: float):
    """A tree whose value is tree * factor, the factor pushed into the terms that are linear in
    their operands (sums, differences, negation, products and quotients with a number, a
    factor of a product) so that it costs no multiply of its own where it can be folded: the
    kernel's base-2 score S * log2(e), with QK * log2(e) as the ScaledQK leaf."""
    from einsim.kernels.compiler.frontend import ScaledQK

    if tree == QKLeaf():
        return ScaledQK()
    if isinstance(tree, Number):
        return Number(tree.value * factor)
    if isinstance(tree, Unary) and tree.op == "-":
        return neg(scaled(tree.operand, factor))
    if isinstance(tree, Binary):
        if tree.op in "+-":
            return Binary(tree.op, scaled(tree.left, factor), scaled(tree.right, factor))
        if tree.op == "*":
            if isinstance(tree.right, Number) or not isinstance(tree.left, Number) and _is_scalar(tree.left):
                return Binary("*", scaled(tree.left, factor), tree.right)
            return Binary("*", tree.left, scaled(tree.right, factor))
        if tree.op == "/":
            return Binary("/", scaled(tree.left, factor), tree.right)
    return Binary("*", tree, Number(factor))


def _is_scalar(tree) -> bool:
    """A subtree worth scaling instead of its sibling: a number or a read of an input that
    depends on no coordinate of the tile is one multiply per tile, not per element."""
    return isinstance(tree, (Number, Access, Name))


def is_constant(tree) -> bool:
    """True when the tree is a number (the derivative folds into the kernel's scale)."""
    return isinstance(tree, Number)


__all__ = ["children", "depends_on", "derivative", "is_constant", "scaled"]
