"""The torch twin of a compiled cascade: softmax(S)·V with the recognised score S and mask,
evaluated with torch ops on whole score rows (fp32 on the GPU), for where the float64 executor
cannot go: GPU-sized checks of tuning trials and benchmarks, and autograd gradients.

It shares only the recognition (frontend) with the kernels: no generated code, tiling, tile
skipping or block mask. The float64 executor stays the oracle the tests compare both against.
"""

from __future__ import annotations

import math

from einsim.einsum_cascades.expr import Access, Binary, Call, Compare, Name, Number, Unary
from einsim.einsum_cascades.ir import resolve_access
from einsim.errors import ConfigError
from einsim.kernels.compiler.frontend import QKLeaf, SoftmaxAttention


class _Evaluator:
    """Values of score and mask trees over a block of query rows, as broadcastable tensors
    [batch, heads, rows, keys]."""

    def __init__(self, form: SoftmaxAttention, sizes: dict[str, int], extras: dict, qk, rows,
                 kv_len: int, batch: int, heads: int, group: int):
        import torch

        self.form, self.sizes, self.extras, self.qk = form, sizes, extras, qk
        device = qk.device
        roles = form.roles
        self.base = {
            roles.batch: torch.arange(batch, device=device)[:, None, None, None],
            roles.head: torch.arange(heads, device=device)[None, :, None, None],
            roles.query: rows.to(device)[None, None, :, None],
            roles.key: torch.arange(kv_len, device=device)[None, None, None, :],
        }
        if roles.kv_head != roles.head:
            self.base[roles.kv_head] = self.base[roles.head] // group
        self.space = form.cascade.space

    def coordinate(self, rank: str):
        if rank in self.base:
            return self.base[rank]
        parent = self.space.parent(rank)
        if parent is None:
            raise ConfigError(f"{self.form.name}: rank {rank} is not a coordinate of the score")
        parts = self.space.partitions[parent]
        position = parts.index(rank)
        stride = math.prod(self.sizes[p] for p in parts[position + 1:])
        value = self.coordinate(parent) // stride
        return value % self.sizes[rank] if position > 0 else value

    def __call__(self, node):
        import torch

        kind = type(node).__name__
        if isinstance(node, QKLeaf):
            return self.qk
        if isinstance(node, Number):
            return node.value
        if kind == "Coordinate":
            return self.coordinate(node.rank)
        if isinstance(node, Name):
            text = node.name
            if text.islower() and text.upper() in self.form.cascade.ranks:
                return self.coordinate(text.upper())
            return self.sizes[text]
        if isinstance(node, Access):
            tensor = self.extras[node.tensor]
            declared = self.form.cascade.inputs[node.tensor]
            index = []
            for read in resolve_access(self.space, declared, node):
                if read.kind == "const":
                    index.append(torch.tensor(read.value, device=self.qk.device))
                else:
                    rank = read.source if read.kind == "coord" else read.rank
                    coordinate = self.coordinate(rank) + read.offset
                    index.append(coordinate.clamp(0, tensor.shape[len(index)] - 1))
            value = tensor[tuple(index)]
            return value.to(self.qk.dtype) if value.is_floating_point() else value
        if isinstance(node, Unary):
            return -self(node.operand)
        if isinstance(node, Binary):
            a, b = self(node.left), self(node.right)
            if node.op == "/":
                return torch.as_tensor(a, dtype=self.qk.dtype, device=self.qk.device) / b
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b}[node.op]()
        if isinstance(node, Compare):
            a, b = self(node.left), self(node.right)
            return {"<=": lambda: a <= b, "<": lambda: a < b, ">=": lambda: a >= b,
                    ">": lambda: a > b, "==": lambda: a == b, "!=": lambda: a != b}[node.op]()
        if kind == "Logical":
            values = [self(c) for c in node.operands]
            result = values[0]
            for value in values[1:]:
                result = (result & value) if node.op == "and" else (result | value)
            return result
        if kind == "Not":  # a condition of sizes alone is a Python bool, whose ~ is -1 or -2
            value = self(node.operand)
            return ~value if isinstance(value, torch.Tensor) else not value
        if isinstance(node, Call):
            args = [self(a) for a in node.args]
            tensors = [torch.as_tensor(a, device=self.qk.device) if not isinstance(a, torch.Tensor)
                       else a for a in args]
            functions = {
                "exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "sqrt": torch.sqrt,
                "abs": torch.abs, "tanh": torch.tanh, "max": torch.maximum, "min": torch.minimum,
                "relu": torch.relu, "sigmoid": torch.sigmoid, "silu": torch.nn.functional.silu,
                "gelu": torch.nn.functional.gelu, "erf": torch.erf,
                "floor": lambda x: torch.floor(x) if x.is_floating_point() else x,
                "ceil": lambda x: torch.ceil(x) if x.is_floating_point() else x,
                "mod": torch.remainder, "sign": torch.sign, "where": torch.where,
                "elu1": lambda x: torch.where(x > 0, x + 1.0, torch.exp(torch.clamp(x, max=0.0))),
            }
            if node.func not in functions:
                raise ConfigError(f"{self.form.name}: the torch twin has no {node.func}()")
            if node.func in ("max", "min"):
                tensors = [t.to(self.qk.dtype) for t in tensors]
            return functions[node.func](*tensors)
        raise ConfigError(f"{self.form.name}: the torch twin cannot evaluate {kind} node {node}")


def twin_attention(form: SoftmaxAttention, sizes: dict[str, int], q, k, v, extras: dict,
                   scale: float, *, dtype=None, max_score_bytes: int = 1 << 30):
    """out [B, Hq, P, Dv] of the cascade, computed as softmax(S)·V in `dtype` (default float64
    on the CPU, float32 elsewhere), differentiable in q, k, v; rows that see no key give 0.
    `sizes`: every rank and symbol bound (Cascade.bind)."""
    import torch

    compute = dtype or (torch.float64 if q.device.type == "cpu" else torch.float32)
    batch, heads, q_len, _ = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    group = heads // kv_heads
    keys = k.to(compute).repeat_interleave(group, 1).transpose(-1, -2)
    values = v.to(compute).repeat_interleave(group, 1)
    element = torch.finfo(compute).bits // 8
    block = max(1, min(q_len, max_score_bytes // max(1, batch * heads * kv_len * element)))
    outs = []
    for start in range(0, q_len, block):
        rows = torch.arange(start, min(q_len, start + block), device=q.device)
        qk = (q[:, :, start:start + rows.numel()].to(compute) @ keys) * scale
        evaluate = _Evaluator(form, sizes, extras, qk, rows, kv_len, batch, heads, group)
        scores = torch.broadcast_to(torch.as_tensor(evaluate(form.score), dtype=compute,
                                                    device=q.device), qk.shape)
        keep = torch.ones_like(qk, dtype=torch.bool)
        for flt in form.mask:
            for condition in flt.conditions:
                keep = keep & torch.broadcast_to(torch.as_tensor(evaluate(condition),
                                                                 device=q.device), qk.shape)
        scores = scores.masked_fill(~keep, float("-inf"))
        outs.append(torch.softmax(scores, -1).nan_to_num(0.0) @ values)
    return torch.cat(outs, 2)


__all__ = ["twin_attention"]
