"""The expression language inside one Einsum line: the syntax tree (`RM[m1+1,p] = max(RM[m1,p],
LM[m1,p])` as nodes), walking and rewriting it, and evaluating size expressions. The tokens and
the parser that build it are einsum_cascades/parser.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from einsim.errors import SpecError

# --- syntax tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Index:
    """One position of a tensor access.

    kind "var": an index variable (`m1`, with offset 1 for `m1+1`); "final": a rank name in
    capitals (`M1`), the last state of an iterative tensor; "const": an integer coordinate.
    """

    kind: str
    name: str = ""
    offset: int = 0
    value: int = 0

    def __str__(self) -> str:
        if self.kind == "var":
            return self.name + (f"+{self.offset}" if self.offset > 0 else f"{self.offset}" if self.offset else "")
        if self.kind == "final":
            return self.name
        return str(self.value)


@dataclass(frozen=True)
class Access:
    tensor: str
    indices: tuple[Index, ...]
    column: int = 0

    def __str__(self) -> str:
        return f"{self.tensor}[{','.join(map(str, self.indices))}]"


@dataclass(frozen=True)
class Number:
    value: float

    def __str__(self) -> str:
        if math.isinf(self.value):
            return "inf" if self.value > 0 else "-inf"
        return repr(int(self.value)) if float(self.value).is_integer() else repr(self.value)


@dataclass(frozen=True)
class Name:
    """A bare name: an index variable or a rank size in a filter, a size symbol elsewhere."""

    name: str
    column: int = 0

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Coordinate:
    """The position of a point along a rank, as a value: `p`, `m` (m1*M0 + m0 in a partitioned
    cascade), `h`. The parser reads every bare name as a Name; the loader turns the lower-case
    index variables of declared ranks into Coordinates."""

    rank: str
    column: int = 0

    def __str__(self) -> str:
        return self.rank.lower()


@dataclass(frozen=True)
class Unary:
    op: str  # "-"
    operand: "Expr"

    def __str__(self) -> str:
        return f"-{_wrap(self.operand, 3)}"


@dataclass(frozen=True)
class Binary:
    op: str  # + - * /
    left: "Expr"
    right: "Expr"

    def __str__(self) -> str:
        level = _PRECEDENCE[self.op]
        # left-associative: the right operand needs parentheses at equal precedence
        return f"{_wrap(self.left, level)} {self.op} {_wrap(self.right, level + 1)}"


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple["Expr", ...]
    column: int = 0

    def __str__(self) -> str:
        return f"{self.func}({', '.join(map(str, self.args))})"


@dataclass(frozen=True)
class Compare:
    op: str  # <= < >= > == !=
    left: "Expr"
    right: "Expr"

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class Logical:
    """`a and b and c` / `a or b`: two or more conditions."""

    op: str  # "and" | "or"
    operands: tuple["Condition", ...]

    def __str__(self) -> str:
        # and binds tighter than or: an `or` inside an `and` needs parentheses
        parts = [f"({c})" if isinstance(c, Logical) and c.op == "or" and self.op == "and" else str(c)
                 for c in self.operands]
        return f" {self.op} ".join(parts)


@dataclass(frozen=True)
class Not:
    operand: "Condition"

    def __str__(self) -> str:
        inner = self.operand
        return f"not ({inner})" if isinstance(inner, Logical) else f"not {inner}"


Expr = Union[Access, Number, Name, Coordinate, Unary, Binary, Call]
Condition = Union[Compare, Logical, Not]

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}

# Functions an expression may use: name -> arity. The operation each counts is in
# ir.map_operations; the value each computes in values.py. `where(cond, a, b)` takes a condition
# first; `mod(a, b)` is the floored remainder a - b*floor(a/b) (the sign of b, as Python's %).
FUNCTIONS = {
    "exp": 1, "log": 1, "log1p": 1, "sqrt": 1, "abs": 1, "tanh": 1, "relu": 1, "gelu": 1, "silu": 1,
    "sigmoid": 1, "elu1": 1, "floor": 1, "max": 2, "min": 2, "mod": 2, "where": 3, "ceil": 1,
}
# ceil only makes sense in rank-size expressions such as ceil(M/M0).
SIZE_ONLY_FUNCTIONS = ("ceil",)
REDUCTIONS = ("sum", "max", "min")
COMPARISONS = ("<=", "<", ">=", ">", "==", "!=")


def _wrap(expr: Expr, level: int) -> str:
    if isinstance(expr, Binary) and _PRECEDENCE[expr.op] < level:
        return f"({expr})"
    if isinstance(expr, Unary) and level > 3:
        return f"({expr})"
    return str(expr)


def walk(expr: Expr):
    """Every node of an expression, parents before children."""
    yield expr
    if isinstance(expr, Unary):
        yield from walk(expr.operand)
    elif isinstance(expr, (Binary, Compare)):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Call):
        for arg in expr.args:
            yield from walk(arg)
    elif isinstance(expr, Logical):
        for operand in expr.operands:
            yield from walk(operand)
    elif isinstance(expr, Not):
        yield from walk(expr.operand)


def transform(expr, replace):
    """A copy of `expr` with every node for which `replace(node)` returns something else than
    None replaced by that (children first, so `replace` sees rebuilt children)."""
    if isinstance(expr, Unary):
        expr = Unary(expr.op, transform(expr.operand, replace))
    elif isinstance(expr, Binary):
        expr = Binary(expr.op, transform(expr.left, replace), transform(expr.right, replace))
    elif isinstance(expr, Compare):
        expr = Compare(expr.op, transform(expr.left, replace), transform(expr.right, replace))
    elif isinstance(expr, Call):
        expr = Call(expr.func, tuple(transform(a, replace) for a in expr.args), expr.column)
    elif isinstance(expr, Logical):
        expr = Logical(expr.op, tuple(transform(c, replace) for c in expr.operands))
    elif isinstance(expr, Not):
        expr = Not(transform(expr.operand, replace))
    replaced = replace(expr)
    return expr if replaced is None else replaced


def conjuncts(condition) -> tuple:
    """The top-level `and` terms of a condition (the condition itself when it is no `and`)."""
    if isinstance(condition, Logical) and condition.op == "and":
        return tuple(c for operand in condition.operands for c in conjuncts(operand))
    return (condition,)


def evaluate_scalar(expr: Expr, lookup) -> float:
    """Evaluate an expression of names and numbers (sizes, filters) with `lookup(name)`."""
    if isinstance(expr, Number):
        return expr.value
    if isinstance(expr, Name):
        return lookup(expr.name)
    if isinstance(expr, Unary):
        return -evaluate_scalar(expr.operand, lookup)
    if isinstance(expr, Binary):
        a, b = evaluate_scalar(expr.left, lookup), evaluate_scalar(expr.right, lookup)
        if expr.op == "/":
            if b == 0:
                raise SpecError(f"division by zero in {expr}")
            return a / b
        return {"+": a + b, "-": a - b, "*": a * b}[expr.op]
    if isinstance(expr, Call):
        values = [evaluate_scalar(arg, lookup) for arg in expr.args]
        if expr.func == "ceil":
            return math.ceil(values[0])
        return {"max": max, "min": min, "abs": lambda x: abs(x)}[expr.func](*values)
    raise SpecError(f"cannot evaluate {expr} as a number")
