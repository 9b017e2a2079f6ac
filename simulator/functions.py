"""What every function a cascade may call costs, in the primitive operations the simulator prices
(multiply, add, subtract, divide, exp, compare): one table, so that sigmoid, gelu, silu and tanh
are priced consistently with exp on every target (docs/simulator.md §3.3).

A spatial target prices each primitive with its own tables: an exp is one pass of its exp unit
or, where exp runs `via` the 2D array (FuseMax), `ops_per_exp` MACs; a divide needs the 1D
array's divider. A function is therefore bound and costed by what it expands to: sigmoid
contains a divide, so FuseMax binds it to the 1D array, and costs there one exp, one add and one
divide per application, whatever the spelling.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from einsim.errors import ConfigError

PRIMITIVES = ("mul", "add", "sub", "div", "exp", "max", "min")

# Per application, with the formula each expansion counts. A sign flip or a constant operand is
# free (a constant is computed once per launch); a select or a comparison is a compare ("max").
FUNCTION_COSTS: dict[str, dict[str, float]] = {
    # exp(x): the primitive itself
    "exp": {"exp": 1},
    # log(x), log1p(x) = log(1 + x): a transcendental of exp's class (range reduction and a short
    # polynomial on the same unit); priced as one exp (an assumption: no table prices log apart)
    "log": {"exp": 1},
    "log1p": {"add": 1, "exp": 1},
    # sqrt(x): the divider's digit-recurrence computes a square root at a divide's cost
    "sqrt": {"div": 1},
    # sigmoid(x) = 1 / (1 + exp(-x))
    "sigmoid": {"exp": 1, "add": 1, "div": 1},
    # silu(x) = x / (1 + exp(-x))  (as kernels/compiler/lib.py computes it)
    "silu": {"exp": 1, "add": 1, "div": 1},
    # tanh(x) = 1 - 2 / (exp(2x) + 1)
    "tanh": {"mul": 1, "exp": 1, "add": 1, "div": 1, "sub": 1},
    # erf(x), Abramowitz & Stegun 7.1.26: t = 1 / (1 + p|x|); 1 - (a1 t + ... + a5 t^5) exp(-x^2):
    # |x|, p|x|, 1 +, the divide, five Horner multiply-adds, x^2, exp, the product, 1 -
    "erf": {"max": 1, "mul": 8, "add": 6, "div": 1, "exp": 1, "sub": 1},
    # gelu(x) = 0.5 x (1 + erf(x / sqrt 2))  (the exact form the executor and kernels compute)
    "gelu": {"max": 1, "mul": 11, "add": 7, "div": 1, "exp": 1, "sub": 1},
    # elu1(x) = x + 1 if x > 0 else exp(min(x, 0)): a compare, a min, an add, an exp, a select
    "elu1": {"max": 2, "min": 1, "add": 1, "exp": 1},
    # relu, abs, max and min of two values: one compare
    "relu": {"max": 1},
    "abs": {"max": 1},
    # floor, ceil: one rounding step of the adder; mod(a, b) = a - b floor(a / b); sign: two compares
    "floor": {"add": 1},
    "ceil": {"add": 1},
    "mod": {"div": 1, "add": 1, "mul": 1, "sub": 1},
    "sign": {"max": 2},
    # comparisons, selects and logic of masks and where(c, a, b): one compare-class operation
    "cmp": {"max": 1},
    "select": {"max": 1},
    "and": {"max": 1},
    "or": {"max": 1},
    "not": {"max": 1},
}


def expand(kind: str) -> Mapping[str, float]:
    """The primitives one operation of `kind` costs (a primitive is itself)."""
    if kind in PRIMITIVES:
        return {kind: 1}
    if kind not in FUNCTION_COSTS:
        raise ConfigError(f"the simulator has no cost for the operation {kind!r}; add it to "
                          f"einsim.simulator.functions.FUNCTION_COSTS with the formula it counts")
    return FUNCTION_COSTS[kind]


def primitive_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """Operation counts by kind (Einsum.operation_counts) expanded into primitives."""
    out: Counter[str] = Counter()
    for kind, count in counts.items():
        for primitive, times in expand(kind).items():
            out[primitive] += count * times
    return dict(out)


def primitive_kinds(kinds: Iterable[str]) -> set[str]:
    """The primitives a map's operations use (an Einsum's map_ops): what binds it to an array."""
    return {primitive for kind in kinds for primitive in expand(kind)}
