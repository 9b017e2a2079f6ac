"""Tile skipping from the mask's coordinates: which key tiles a query tile must visit (and which
query tiles a key tile must), as segments that run masked or unmasked.

The mask (every filter, and-ed) is put in disjunctive normal form: a few terms, each a
conjunction of comparisons. A comparison becomes  a_m*m + a_p*p + c (op) 0  with integer a_m,
a_p and c an integer expression of sizes, symbols and the program's batch/head. With a unit
coefficient on the walked coordinate it bounds that coordinate by an affine function of the
tile's other coordinate, whose extremes sit at the tile's first and last row (column); free of
the walked coordinate it keeps or drops the whole tile. Anything else (non-affine, a tensor read,
a coefficient other than +-1) bounds nothing and rules out unmasked tiles, which is always right.

A mask of one term gives [lo, mid_lo) masked, [mid_lo, mid_hi) unmasked, [mid_hi, hi) masked.
A mask of several terms (sinks + window, prefix-LM) or with an atom that bounds nothing goes to
a block mask instead (generate.py): the normal form here only decides which.
"""

from __future__ import annotations

from dataclasses import dataclass

from einsim.einsum_cascades.expr import Binary, Compare, Name, Number, Unary
from einsim.kernels.compiler.codegen import Emitter, condition_nodes
from einsim.kernels.compiler.frontend import SoftmaxAttention

_FLIP = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "==": "==", "!=": "!="}
_NEGATE = {"<=": ">", "<": ">=", ">=": "<", ">": "<=", "==": "!=", "!=": "=="}
# More terms than this and the mask is treated as one opaque term (visited whole, masked).
MAX_TERMS = 4


@dataclass(frozen=True)
class Affine:
    """a_m*m + a_p*p + const (const: Triton code of an integer, '0' when none)."""

    a_m: int
    a_p: int
    const: str


@dataclass(frozen=True)
class AffineCondition:
    form: Affine | None  # None: opaque (bounds nothing)
    op: str  # <=, >=, ==, != after turning strict comparisons of integers into these
    text: str


def _combine(a: Affine, b: Affine, sign: int) -> Affine:
    if b.const == "0":
        const = a.const
    elif a.const == "0":
        const = b.const if sign > 0 else f"(-{b.const})"
    else:
        const = f"({a.const} {'+' if sign > 0 else '-'} {b.const})"
    return Affine(a.a_m + sign * b.a_m, a.a_p + sign * b.a_p, const)


class _Affinizer:
    def __init__(self, emitter: Emitter):
        self.emitter = emitter
        roles = emitter.form.roles
        self.query, self.key = roles.query, roles.key

    def rank(self, rank: str) -> Affine | None:
        if rank == self.key:
            return Affine(1, 0, "0")
        if rank == self.query:
            return Affine(0, 1, "0")
        code = self.emitter.coordinate(rank)
        if "P_" in code or "M_" in code:
            return None  # a partition part of m or p (m1, m0): not affine
        return Affine(0, 0, code)

    def __call__(self, node) -> Affine | None:
        if isinstance(node, Number):
            if not float(node.value).is_integer():
                return None
            return Affine(0, 0, str(int(node.value)))
        if type(node).__name__ == "Coordinate":
            return self.rank(node.rank)
        if isinstance(node, Name):
            text = node.name
            if text.islower() and text.upper() in self.emitter.cascade.ranks:
                return self.rank(text.upper())
            return Affine(0, 0, self.emitter.name(node))
        if isinstance(node, Unary) and node.op == "-":
            inner = self(node.operand)
            return None if inner is None else _combine(Affine(0, 0, "0"), inner, -1)
        if isinstance(node, Binary):
            left, right = self(node.left), self(node.right)
            if left is None or right is None:
                return None
            if node.op in "+-":
                return _combine(left, right, 1 if node.op == "+" else -1)
            if node.op == "*":
                for literal, other in ((node.left, right), (node.right, left)):
                    if isinstance(literal, Number) and float(literal.value).is_integer():
                        factor = int(literal.value)
                        return Affine(factor * other.a_m, factor * other.a_p,
                                      f"({factor} * {other.const})")
                if not (left.a_m or left.a_p or right.a_m or right.a_p):
                    return Affine(0, 0, f"({left.const} * {right.const})")
        return None


def affine_condition(node, affinize: _Affinizer) -> AffineCondition:
    """One comparison as a_m*m + a_p*p + c (op) 0, strict comparisons made inclusive."""
    if not isinstance(node, Compare):
        return AffineCondition(None, "", str(node))
    left, right = affinize(node.left), affinize(node.right)
    if left is None or right is None:
        return AffineCondition(None, "", str(node))
    form = _combine(left, right, -1)
    op = node.op
    if op == "<":  # x < 0  <=>  x + 1 <= 0 for integers
        form, op = _combine(form, Affine(0, 0, "1"), 1), "<="
    elif op == ">":
        form, op = _combine(form, Affine(0, 0, "1"), -1), ">="
    return AffineCondition(form, op, str(node))


# -- disjunctive normal form ------------------------------------------------------------------
def _dnf(node, negate: bool = False) -> list[list]:
    kind = type(node).__name__
    if kind == "Not":
        return _dnf(node.operand, not negate)
    if kind == "Logical":
        conjunction = (node.op == "and") != negate
        parts = [_dnf(operand, negate) for operand in node.operands]
        if conjunction:
            terms = [[]]
            for part in parts:
                terms = [t + p for t in terms for p in part]
                if len(terms) > MAX_TERMS * 4:
                    raise _TooMany()
            return terms
        return [t for part in parts for t in part]
    if isinstance(node, Compare) and negate:
        return [[Compare(_NEGATE[node.op], node.left, node.right)]]
    if negate:
        return [[_Opaque(node)]]
    return [[node]]


class _TooMany(Exception):
    pass


@dataclass(frozen=True)
class _Opaque:
    node: object

    def __str__(self) -> str:
        return f"not ({self.node})"


def mask_terms(form: SoftmaxAttention) -> list[list]:
    """The mask as a disjunction of conjunctions of atoms (one term with every condition when
    the normal form would have more than MAX_TERMS terms)."""
    conditions = condition_nodes(form)
    terms: list[list] = [[]]
    try:
        for condition in conditions:
            terms = [t + p for t in terms for p in _dnf(condition)]
            if len(terms) > MAX_TERMS:
                raise _TooMany()
    except _TooMany:
        return [[_Opaque(c) for c in conditions]]
    return terms


def is_affine(form: SoftmaxAttention, emitter: Emitter) -> bool:
    """True when every atom of the mask's normal form bounds tiles exactly (no opaque atom): tile
    ranges then skip every empty tile; otherwise a block mask does better."""
    affinize = _Affinizer(emitter)
    for term in mask_terms(form):
        for atom in term:
            condition = affine_condition(atom, affinize)
            if condition.form is None or (abs(condition.form.a_m) > 1 or abs(condition.form.a_p) > 1) \
                    or condition.op == "!=":
                return False
    return True


# -- code ---------------------------------------------------------------------------------------
def _term_lines(term: list, affinize: _Affinizer, walked: str, t: int, extent: str,
                block: str) -> list[str]:
    lines = [f"    lo_{t} = start * 0", f"    hi_{t} = lo_{t} + {extent}",
             f"    flo_{t} = lo_{t}", f"    fhi_{t} = hi_{t}"]
    for atom in term:
        condition = affine_condition(atom, affinize)
        lines.append(f"    # {condition.text}")
        affine = condition.form
        if affine is None:
            lines.append(f"    fhi_{t} = flo_{t} * 0  # not affine: every visited tile is masked")
            continue
        walked_coef = affine.a_m if walked == "m" else affine.a_p
        other_coef = affine.a_p if walked == "m" else affine.a_m

        def at(endpoint: str) -> str:
            terms = [affine.const] if affine.const != "0" else []
            if other_coef:
                terms.append(f"{other_coef} * {endpoint}")
            return " + ".join(terms) or "0"

        op = condition.op
        if walked_coef == 0:
            if op in ("<=", ">="):
                lines += [f"    r0 = ({at('s0')}) {op} 0", f"    r1 = ({at('s1')}) {op} 0",
                          f"    hi_{t} = tl.where(r0 | r1, hi_{t}, lo_{t})",
                          f"    fhi_{t} = tl.where(r0 & r1, fhi_{t}, flo_{t} * 0)"]
            elif other_coef == 0:
                lines += [f"    r0 = ({at('s0')}) {op} 0", f"    hi_{t} = tl.where(r0, hi_{t}, lo_{t})"]
            else:
                lines.append(f"    fhi_{t} = flo_{t} * 0  # an (in)equality on the other coordinate")
            continue
        if abs(walked_coef) != 1:
            lines.append(f"    fhi_{t} = flo_{t} * 0  # coefficient {walked_coef}: masked only")
            continue
        # walked_coef * x + rest (op) 0  ->  x (op') -rest / walked_coef
        if walked_coef == 1:
            def bound(e):
                return f"-({at(e)})"
            op_x = op
        else:
            def bound(e):
                return f"({at(e)})"
            op_x = _FLIP[op]
        lines += [f"    b0 = {bound('s0')}", f"    b1 = {bound('s1')}"]
        if op_x in ("<=", "=="):
            lines += [f"    hi_{t} = tl.minimum(hi_{t}, tl.maximum(b0, b1) + 1)",
                      f"    fhi_{t} = tl.minimum(fhi_{t}, tl.minimum(b0, b1) + 1)"]
        if op_x in (">=", "=="):
            lines += [f"    lo_{t} = tl.maximum(lo_{t}, tl.minimum(b0, b1))",
                      f"    flo_{t} = tl.maximum(flo_{t}, tl.maximum(b0, b1))"]
        if op_x == "!=":
            lines.append(f"    fhi_{t} = flo_{t} * 0  # x != bound: every tile is masked")
    lines.append(f"    lo_{t}, ml_{t}, mh_{t}, hi_{t} = lib.tile_ranges(lo_{t}, hi_{t}, flo_{t}, "
                 f"fhi_{t}, {block})")
    return lines


def range_function(name: str, form: SoftmaxAttention, emitter: Emitter, walked: str) -> str:
    """Source of a @triton.jit helper `name(start, batch, head, kv_head, q_len, kv_len, ...)`
    returning the 3 segments (start, end) of a one-term mask — masked, unmasked, masked — of
    the coordinate `walked` ("m": key tiles of the query tile at `start`; "p": query tiles of
    the key tile at `start`)."""
    terms = mask_terms(form)
    affinize = _Affinizer(emitter)
    if walked == "m":
        extent, other_extent, block, other_block = "kv_len", "q_len", "BLOCK_N", "BLOCK_M"
    else:
        extent, other_extent, block, other_block = "q_len", "kv_len", "BLOCK_M", "BLOCK_N"
    lines = [
        "@triton.jit",
        f"def {name}(start, batch, head, kv_head, q_len, kv_len{emitter.args.text()},",
        "        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):",
        f'    """{"Key" if walked == "m" else "Query"} tiles the tile at `start` visits, per term '
        'of the mask: [lo, ml) masked, [ml, mh) unmasked, [mh, hi) masked."""',
        "    s0 = start",
        f"    s1 = tl.minimum(start + {other_block}, {other_extent}) - 1",
    ]
    for t, term in enumerate(terms):
        lines += _term_lines(term, affinize, walked, t, extent, block)
    if len(terms) != 1:  # generate.py gives several terms a block mask instead
        raise ValueError(f"range_function takes a mask of one term, got {len(terms)}")
    returned = ", ".join(f"lo_{t}, ml_{t}, ml_{t}, mh_{t}, mh_{t}, hi_{t}" for t in range(len(terms)))
    lines.append(f"    return {returned}")
    return "\n".join(lines) + "\n"


__all__ = ["Affine", "AffineCondition", "MAX_TERMS", "affine_condition", "is_affine",
           "mask_terms", "range_function"]
