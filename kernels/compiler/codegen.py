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

    # expressions
    def expr(self, node) -> str:
        if isinstance(node, QKLeaf):
            return "qk"
        if isinstance(node, ScaledQK):
            return "qk2"
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
            return f"(-{self.expr(node.operand)})"
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


__all__ = ["COMPARISONS", "Emitter", "FUNCTIONS", "KernelArgs", "condition_nodes"]
