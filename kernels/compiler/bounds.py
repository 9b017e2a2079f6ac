"""Tile skipping from the mask's coordinates: which key tiles a query tile must visit (and which
query tiles a key tile must), split into masked edges and an unmasked middle.

Each mask condition is put in the form  a_m*m + a_p*p + c (op) 0  with integer a_m, a_p and c
an integer expression of sizes, symbols and the program's batch/head. A condition with a unit
coefficient on the walked coordinate bounds it by an affine function of the tile's other
coordinate, whose extremes sit at the tile's first and last row (column); a condition free of
the walked coordinate keeps or drops the whole tile. Anything else (non-affine, a tensor read,
a coefficient other than +-1) bounds nothing and only ever runs masked, which is always right.
The generated helpers return (lo, mid_lo, mid_hi, hi) like kernels.flash.tiles.key_bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from einsim.einsum_cascades.expr import Binary, Compare, Name, Number, Unary
from einsim.kernels.compiler.codegen import Emitter, condition_nodes
from einsim.kernels.compiler.frontend import SoftmaxAttention

_FLIP = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "==": "==", "!=": "!="}


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

    def __call__(self, node) -> Affine | None:
        if isinstance(node, Number):
            if not float(node.value).is_integer():
                return None
            return Affine(0, 0, str(int(node.value)))
        if isinstance(node, Name):
            text = node.name
            if text.islower() and text.upper() == self.key:
                return Affine(1, 0, "0")
            if text.islower() and text.upper() == self.query:
                return Affine(0, 1, "0")
            code = self.emitter.name(node)
            if "P_" in code or "M_" in code:
                return None  # a partition part of m or p (m1, m0): not affine
            return Affine(0, 0, code)
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


def affine_conditions(form: SoftmaxAttention, emitter: Emitter) -> list[AffineCondition]:
    """The mask's conditions as a_m*m + a_p*p + c (op) 0, strict comparisons made inclusive."""
    affinize = _Affinizer(emitter)
    found = []
    for condition in condition_nodes(form):
        if not isinstance(condition, Compare):
            found.append(AffineCondition(None, "", str(condition)))
            continue
        left, right = affinize(condition.left), affinize(condition.right)
        if left is None or right is None:
            found.append(AffineCondition(None, "", str(condition)))
            continue
        form_ = _combine(left, right, -1)
        op = condition.op
        if op == "<":  # x < 0  <=>  x + 1 <= 0 for integers
            form_, op = _combine(form_, Affine(0, 0, "1"), 1), "<="
        elif op == ">":
            form_, op = _combine(form_, Affine(0, 0, "1"), -1), ">="
        found.append(AffineCondition(form_, op, str(condition)))
    return found


def range_function(name: str, form: SoftmaxAttention, emitter: Emitter, walked: str) -> str:
    """Source of a @triton.jit helper `name(start, batch, head, kv_head, q_len, kv_len, ...)`
    returning (lo, mid_lo, mid_hi, hi) of the coordinate `walked` ("m": key tiles of the query
    tile at `start`; "p": query tiles of the key tile at `start`)."""
    conditions = affine_conditions(form, emitter)
    if walked == "m":
        extent, other_extent, block, other_block = "kv_len", "q_len", "BLOCK_N", "BLOCK_M"
    else:
        extent, other_extent, block, other_block = "q_len", "kv_len", "BLOCK_M", "BLOCK_N"
    lines = [
        "@triton.jit",
        f"def {name}(start, batch, head, kv_head, q_len, kv_len{emitter.args.text()},",
        "        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):",
        f'    """Tiles of {"keys" if walked == "m" else "queries"} the tile at `start` visits: '
        "[lo, mid_lo) masked, [mid_lo, mid_hi) unmasked, [mid_hi, hi) masked.\"\"\"",
        "    s0 = start",
        f"    s1 = tl.minimum(start + {other_block}, {other_extent}) - 1",
        "    lo = start * 0",
        f"    hi = lo + {extent}",
        "    full_lo = lo",
        "    full_hi = hi",
    ]
    for condition in conditions:
        lines.append(f"    # {condition.text}")
        affine = condition.form
        if affine is None:
            lines.append("    full_hi = full_lo * 0  # not affine: every visited tile is masked")
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
                          "    hi = tl.where(r0 | r1, hi, lo)",
                          "    full_hi = tl.where(r0 & r1, full_hi, full_lo * 0)"]
            elif other_coef == 0:
                lines += [f"    r0 = ({at('s0')}) {op} 0", "    hi = tl.where(r0, hi, lo)"]
            else:
                lines.append("    full_hi = full_lo * 0  # an (in)equality on the other coordinate")
            continue
        if abs(walked_coef) != 1:
            lines.append(f"    full_hi = full_lo * 0  # coefficient {walked_coef}: masked only")
            continue
        # walked_coef * x + rest (op) 0  ->  x (op') -rest / walked_coef
        if walked_coef == 1:
            bound = lambda e: f"-({at(e)})"  # noqa: E731
            op_x = op
        else:
            bound = lambda e: f"({at(e)})"  # noqa: E731
            op_x = _FLIP[op]
        lines += [f"    b0 = {bound('s0')}", f"    b1 = {bound('s1')}"]
        if op_x in ("<=", "=="):
            lines += ["    hi = tl.minimum(hi, tl.maximum(b0, b1) + 1)",
                      "    full_hi = tl.minimum(full_hi, tl.minimum(b0, b1) + 1)"]
        if op_x in (">=", "=="):
            lines += ["    lo = tl.maximum(lo, tl.minimum(b0, b1))",
                      "    full_lo = tl.maximum(full_lo, tl.maximum(b0, b1))"]
        if op_x == "!=":
            lines.append("    full_hi = full_lo * 0  # x != bound: every tile is masked")
    lines.append(f"    return lib.tile_ranges(lo, hi, full_lo, full_hi, {block})")
    return "\n".join(lines) + "\n"


__all__ = ["Affine", "AffineCondition", "affine_conditions", "range_function"]
