"""Triton source for the parts of a kernel that depend on the cascade: the score expression, its
derivative, the element mask and the per-tile key/query ranges, as small @triton.jit helpers
over a tile's query coordinates P_ and key coordinates M_ (broadcastable int32 tensors).

Every name the helpers read besides the tile is an extra kernel argument: extra input tensors
(pointer + one stride per axis), rank sizes (`sz_M0`) and size symbols (`sym_window_left`),
bound on the host per call. The same helpers serve the forward ([queries, keys] tiles) and the
backward's transposed [keys, queries] tiles: only the shapes of P_ and M_ differ.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from einsim.einsum_cascades.expr import Access, Binary, Call, Compare, Name, Number, Unary
from einsim.einsum_cascades.ir import resolve_access
from einsim.errors import ConfigError
from einsim.kernels.compiler.frontend import QKLeaf, ScaledQK, SoftmaxAttention, children

# Cascade functions -> Triton (tl.*) or the compiler's runtime library (lib.*).
FUNCTIONS = {
    "exp": "tl.exp", "log": "tl.log", "sqrt": "tl.sqrt", "abs": "tl.abs", "max": "tl.maximum",
    "min": "tl.minimum", "erf": "tl.math.erf", "ceil": "lib.ceil", "floor": "lib.floor",
    "relu": "lib.relu", "sigmoid": "lib.sigmoid", "silu": "lib.silu", "gelu": "lib.gelu",
    "elu1": "lib.elu1", "tanh": "lib.tanh", "log1p": "lib.log1p", "mod": "lib.mod",
    "sign": "lib.sign", "where": "tl.where",
}
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
_QK = re.compile(r"\bqk2?\b")


@dataclass(frozen=True)
class QueryValue:
    """A kernel variable that varies along the query axis only (one value per query row), as a
    leaf of a score tree: emitted as `code`, grouped with the query terms of a sum."""

    code: str  # must contain "P_" (how tile_kind tells query-side code)

    def __str__(self) -> str:
        return self.code


def tile_kind(code: str) -> str:
    """What an emitted expression varies along: 'tile' (query and key: [rows, cols], one value
    per element), 'row' (query coordinates only), 'col' (key coordinates only) or 'uniform'
    (one value per tile)."""
    if _QK.search(code):
        return "tile"
    rows, cols = "P_" in code, "M_" in code
    return "tile" if rows and cols else "row" if rows else "col" if cols else "uniform"


def _signed_sum(items: list[tuple[int, str | None, str]]) -> str | None:
    """'a + f * (b - c)' of (sign, factor, code) items: the items of one factor summed first
    and multiplied once, a positive item first where there is one."""
    if not items:
        return None
    by_factor: dict = {}
    for sign, factor, code in items:
        by_factor.setdefault(factor, []).append((sign, code))
    items = list(by_factor.pop(None, []))
    for factor, group in by_factor.items():
        items.append((1, f"({factor} * {_plain_sum(group)})"))
    return _plain_sum(items)


def _plain_sum(items: list[tuple[int, str]]) -> str:
    items = sorted(items, key=lambda item: item[0] < 0)  # stable: positives first
    sign, code = items[0]
    text = code if sign > 0 else f"(-{code})"
    for sign, code in items[1:]:
        text = f"({text} {'+' if sign > 0 else '-'} {code})"
    return text


@dataclass
class KernelArgs:
    """The cascade-specific arguments every generated helper and kernel takes, in order."""

    # extra input -> number of axes; in the source x_<name> and strides x_<name>_s<axis>, so
    # that a user's input named like a kernel variable (DQ, DK of packed documents) cannot clash
    tensors: dict[str, int] = field(default_factory=dict)
    sizes: list[str] = field(default_factory=list)  # rank names whose size is read (sz_<R>)
    symbols: list[str] = field(default_factory=list)  # size symbols read (sym_<s>)

    def names(self) -> list[str]:
        found = []
        for tensor, ndim in self.tensors.items():
            found.append(f"x_{tensor}")
            found += [f"x_{tensor}_s{axis}" for axis in range(ndim)]
        found += [f"sz_{rank}" for rank in self.sizes]
        found += [f"sym_{symbol}" for symbol in self.symbols]
        return found

    def text(self) -> str:
        """', a, b' (with a leading comma) or '' when there are none."""
        names = self.names()
        return "".join(", " + n for n in names)


class Emitter:
    """Turns score, derivative and mask trees into Triton expressions, recording the arguments
    they read in `args`."""

    def __init__(self, form: SoftmaxAttention, args: KernelArgs | None = None):
        self.form = form
        self.cascade = form.cascade
        self.space = form.cascade.space
        self.args = args or KernelArgs()
        roles = form.roles
        self.base = {roles.query: "P_", roles.key: "M_", roles.batch: "batch", roles.head: "head"}
        if roles.kv_head != roles.head:
            self.base[roles.kv_head] = "kv_head"

    # names and coordinates
    def size(self, rank: str) -> str:
        if rank == self.form.roles.query:
            return "q_len"
        if rank == self.form.roles.key:
            return "kv_len"
        if rank not in self.args.sizes:
            self.args.sizes.append(rank)
        return f"sz_{rank}"

    def symbol(self, name: str) -> str:
        if name not in self.args.symbols:
            self.args.symbols.append(name)
        return f"sym_{name}"

    def coordinate(self, rank: str) -> str:
        """The coordinate of `rank` at each point of the tile (int32, broadcastable)."""
        if rank in self.base:
            return self.base[rank]
        parent = self.space.parent(rank)
        if parent is None:
            roles = self.form.roles
            raise ConfigError(
                f"{self.cascade.source}: the score or mask of {self.cascade.name!r} reads rank "
                f"{rank}, which is not a coordinate of one score element (those are "
                f"{roles.batch}, {roles.head}, {roles.query}, {roles.key} and their partition parts)")
        parts = self.space.partitions[parent]
        position = parts.index(rank)
        inner = [self.size(p) for p in parts[position + 1:]]
        code = self.coordinate(parent)
        if inner:
            code = f"({code} // ({' * '.join(inner)}))"
        if position > 0:
            code = f"({code} % {self.size(rank)})"
        return code

    def name(self, node: Name) -> str:
        text = node.name
        if text.islower() and text.upper() in self.cascade.ranks:
            return self.coordinate(text.upper())
        if text in self.cascade.ranks:
            return self.size(text)
        if text in self.cascade.symbols or text in self.space.symbols or text.islower():
            return self.symbol(text)
        raise ConfigError(f"{self.cascade.source}: unknown name {text!r} in the score or mask")

    def offsets(self, node: Access, strides: str) -> tuple[str, str, bool, bool]:
        """(offset, mask, reads query positions, reads key positions) of an input access, with
        per-axis strides named `<strides><axis>` (x_BIAS_s for the input, dx_0_s for a gradient)."""
        name = node.tensor
        if name not in self.cascade.inputs:
            raise ConfigError(f"{self.cascade.source}: the score reads {node}, which is not an input")
        declared = self.cascade.inputs[name]
        reads = resolve_access(self.space, declared, node)
        terms, masks = [], []
        for axis, read in enumerate(reads):
            if read.kind == "const":
                if read.value:
                    terms.append(f"{read.value} * {strides}{axis}")
                continue
            if read.kind == "final":
                raise ConfigError(f"{self.cascade.source}: {node}: an input has no final state")
            rank = read.source if read.kind == "coord" else read.rank
            if self.space.root(rank) in (self.form.roles.head_dim, self.form.roles.value_dim):
                raise ConfigError(f"{self.cascade.source}: {node} is indexed by the head dimension "
                                  f"{rank}; a score term must be one number per (query, key) pair")
            code = self.coordinate(rank)
            if read.offset:
                code = f"({code} + {read.offset})"
            if "P_" in code or "M_" in code:
                terms.append(f"{code} * {strides}{axis}")
                if "P_" in code:
                    masks.append("(P_ < q_len)")
                if "M_" in code:
                    masks.append("(M_ < kv_len)")
            else:
                terms.append(f"{code}.to(tl.int64) * {strides}{axis}")
        offset = " + ".join(terms) or "0"
        mask = " & ".join(dict.fromkeys(masks))
        return offset, mask, "(P_ < q_len)" in masks, "(M_ < kv_len)" in masks

    def access(self, node: Access) -> str:
        name = node.tensor
        self.args.tensors[name] = len(self.cascade.inputs.get(name, ()))
        offset, mask, _, _ = self.offsets(node, f"x_{name}_s")
        if mask:
            return f"lib.as_value(tl.load(x_{name} + {offset}, mask={mask}, other=0))"
        return f"lib.as_value(tl.load(x_{name} + {offset}))"

    # sums, regrouped so that a tile pays one operation per element for its separable terms
    def _terms(self, node, sign: int, factor: str | None, out: list) -> None:
        """The signed terms (sign, code) of a sum. A product of a one-per-tile factor and a sum
        whose terms each vary along queries or keys only is distributed: f*(p - m) becomes
        f*p - f*m, a column of rows and a row of columns, added once per element, instead
        of an integer subtraction, a conversion and a multiply on the whole tile."""
        if isinstance(node, Binary) and node.op in "+-":
            self._terms(node.left, sign, factor, out)
            self._terms(node.right, sign if node.op == "+" else -sign, factor, out)
            return
        if isinstance(node, Unary) and node.op == "-":
            self._terms(node.operand, -sign, factor, out)
            return
        if isinstance(node, Binary) and node.op == "*":
            for one, other in ((node.left, node.right), (node.right, node.left)):
                if not (isinstance(other, (Binary, Unary)) and getattr(other, "op", "") in "+-"):
                    continue
                code = self.expr(one)
                if tile_kind(code) != "uniform":
                    continue
                inner: list = []
                self._terms(other, 1, None, inner)
                kinds = {tile_kind(c) for _, _, c in inner}
                if "tile" in kinds or not kinds & {"row", "col"}:
                    continue
                scale = code if factor is None else f"({factor} * {code})"
                out.extend((sign * s, scale if f is None else f"({scale} * {f})", c)
                           for s, f, c in inner)
                return
        out.append((sign, factor, self.expr(node)))

    def additive(self, node) -> str:
        """A sum as (terms on the whole tile) + ((rows' terms) + (columns' terms)), the
        one-per-tile terms folded into the rows' (else the columns', else kept apart)."""
        terms: list = []
        self._terms(node, 1, None, terms)
        groups: dict[str, list] = {"tile": [], "row": [], "col": [], "uniform": []}
        for sign, factor, code in terms:
            groups[tile_kind(code)].append((sign, factor, code))
        if groups["row"]:
            groups["row"] = groups["uniform"] + groups["row"]
        elif groups["col"]:
            groups["col"] = groups["uniform"] + groups["col"]
        else:
            groups["row"] = groups["uniform"]
        parts = [p for p in (_signed_sum(groups["tile"]), _signed_sum(groups["row"]),
                             _signed_sum(groups["col"])) if p is not None]
        if len(parts) == 3:
            return f"({parts[0]} + ({parts[1]} + {parts[2]}))"
        return parts[0] if len(parts) == 1 else f"({parts[0]} + {parts[1]})"

    # expressions
    def expr(self, node) -> str:
        if isinstance(node, QKLeaf):
            return "qk"
        if isinstance(node, ScaledQK):
            return "qk2"
        if isinstance(node, QueryValue):
            return node.code
        if isinstance(node, Number):
            value = node.value
            if math.isinf(value):
                return 'float("inf")' if value > 0 else 'float("-inf")'
            if float(value).is_integer() and abs(value) < 2**31:
                return str(int(value))
            return repr(float(value))
        if isinstance(node, Name):
            return self.name(node)
        if isinstance(node, Access):
            return self.access(node)
        if isinstance(node, Unary) and node.op == "-":
            return self.additive(node)
        if isinstance(node, Binary) and node.op in "+-":
            return self.additive(node)
        if isinstance(node, Binary):
            left, right = self.expr(node.left), self.expr(node.right)
            if node.op == "/" and "P_" not in right and "M_" not in right:
                # a divisor that is one number per tile: one reciprocal, then a multiply per
                # element (true division either way: 1.0 / an integer is a float)
                return f"({left} * (1.0 / {right}))"
            return f"({left} {node.op} {right})"
        if isinstance(node, Compare):
            return f"({self.expr(node.left)} {node.op} {self.expr(node.right)})"
        if isinstance(node, Call):
            if node.func not in FUNCTIONS:
                raise ConfigError(f"{self.cascade.source}: the score uses {node.func}(), which the "
                                  f"kernel compiler cannot generate; it can: "
                                  + ", ".join(sorted(FUNCTIONS)))
            return f"{FUNCTIONS[node.func]}({', '.join(self.expr(a) for a in node.args)})"
        kind = type(node).__name__
        # Node kinds of the notation's conditions and coordinates-as-values (einsum_cascades.expr):
        # matched by name so that this module does not depend on when each one landed.
        if kind == "Coordinate":
            return self.coordinate(node.rank)
        if kind == "Logical":
            joiner = {"and": " & ", "or": " | "}[node.op]
            return "(" + joiner.join(self.expr(c) for c in node.operands) + ")"
        if kind == "Not":
            return f"(~{self.expr(node.operand)})"
        raise ConfigError(f"{self.cascade.source}: the kernel compiler cannot generate {kind} "
                          f"node {node} of the score or mask")


def condition_nodes(form: SoftmaxAttention) -> list:
    """Every condition of the mask, as one conjunction."""
    found = []
    for flt in form.mask:
        found += list(flt.conditions)
    return found


__all__ = ["COMPARISONS", "Emitter", "FUNCTIONS", "KernelArgs", "QueryValue", "condition_nodes"]
