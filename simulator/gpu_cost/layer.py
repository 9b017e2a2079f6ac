"""A transformer layer and a whole model on a GPU, operator by operator, priced by the one cost
model: the linear layers as GEMMs (gemm.py), attention as the fused kernel of a cascade
(model.kernel_cost), norms, rotary embeddings, activations and residuals as the memory-bound
kernels eager PyTorch launches for them (docs/simulator.md § GPU cost model, "Layers and models").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from einsim.problem import Problem
from einsim.simulator.gpu_cost.gemm import elementwise_time, gemm_cost
from einsim.simulator.gpu_cost.model import kernel_cost
from einsim.simulator.gpu_cost.roofs import GpuRoofs, gpu_roofs
from einsim.simulator.gpu_cost.styles import FittedModel, fitted

# What eager PyTorch does for each element-wise operator of a Hugging Face-style decoder layer:
# (kernels launched, passes over the operator's tensor: reads + writes, strided input).
# rms_norm: one fused kernel that reads its row twice (sum of squares, then scale) and writes once.
# rotary (rotate_half, on q and k viewed [B, H, T, D] over [B, T, H, D] storage): neg of one half,
# cat, two products with cos/sin, an add: 5 kernels and 10 passes per tensor (q and k: 10 kernels),
# on strided views.
# silu_mul: silu (read, write) then the product (2 reads, write). residual: 2 reads, 1 write.
ELEMENTWISE = {
    "norm": (1, 3.0, False),
    "rotary": (10, 10.0, True),
    "gated_activation": (2, 5.0, False),
    "activation": (1, 2.0, False),
    "residual": (1, 3.0, False),
}


@dataclass(frozen=True)
class OperatorCost:
    """One operator of a layer: its time on the GPU, its work and its bytes."""

    name: str
    kind: str  # gemm | attention | elementwise
    time_s: float
    flops: float
    hbm_bytes: float
    bound: str
    kernels: int
    detail: str = ""

    @property
    def intensity(self) -> float:
        """FLOP per HBM byte (the roofline's x)."""
        return self.flops / self.hbm_bytes if self.hbm_bytes else float("inf")


@dataclass(frozen=True)
class LayerCost:
    """One decoder layer for `tokens` new tokens (prefill: batch x seq_len; decode: batch)."""

    model: str
    target: str
    mode: str
    batch: int
    seq_len: int
    operators: tuple[OperatorCost, ...]
    notes: tuple[str, ...] = ()

    @property
    def time_s(self) -> float:
        return sum(op.time_s for op in self.operators)

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.operators)

    @property
    def hbm_bytes(self) -> float:
        return sum(op.hbm_bytes for op in self.operators)

    def operator(self, name: str) -> OperatorCost:
        return next(op for op in self.operators if op.name == name)


def layer_cost(model: Any, seq_len: int, target: Any, mode: str = "prefill", batch: int | None = None,
               attention_style: str | None = None, cascade: Any = None, fit: FittedModel | None = None) -> LayerCost:
    """Every operator of one layer of `model` (a ModelPreset) at `seq_len` on the GPU `target`:
    prefill processes batch x seq_len tokens causally; decode one token per sequence against a
    KV cache of seq_len. Attention runs `cascade` (default fusemax) in `attention_style` (default:
    the GPU family's, styles.DEFAULT_STYLE: cuDNN's on Hopper, which torch's SDPA dispatches to)."""
    from einsim.einsum_cascades import load_cascade

    fit = fit or fitted()
    problem = model.problem(seq_len, mode, batch)
    roofs = gpu_roofs(target, problem.dtype)
    s = problem.dtype_bytes
    tokens = problem.batch * problem.q_len
    hidden, heads, kv_heads, head_dim = model.hidden, model.heads, model.key_value_heads, model.head_dim
    v_dim = model.v_head_dim or head_dim
    ops: list[OperatorCost] = []

    def gemm(name: str, n: int, k: int) -> None:
        cost = gemm_cost(tokens, n, k, s, roofs, fit)
        ops.append(OperatorCost(name, "gemm", cost.time_s, cost.flops, cost.hbm_bytes, cost.bound,
                                len(cost.launches), f"{cost.tiles[0]}x{cost.tiles[1]} tiles, split-K {cost.split_k}"))

    def elementwise(name: str, kind: str, elements: float, flops_per_element: float = 1.0) -> None:
        kernels, passes, strided = ELEMENTWISE[kind]
        moved = passes * elements * s
        efficiency = fit.elementwise.strided_efficiency if strided else 1.0
        timed = elementwise_time(moved / efficiency, kernels, roofs, fit)
        ops.append(OperatorCost(name, "elementwise", timed.time_s, flops_per_element * elements, moved, timed.bound,
                                kernels, f"{kernels} kernel(s), {passes:g} passes" + (", strided" if strided else "")))

    elementwise("norm_1", "norm", tokens * hidden, 4.0)
    gemm("q_proj", heads * head_dim, hidden)
    gemm("k_proj", kv_heads * head_dim, hidden)
    gemm("v_proj", kv_heads * v_dim, hidden)
    elementwise("rotary_qk", "rotary", tokens * (heads + kv_heads) * head_dim, 3.0)
    ops.append(_attention(problem, target, attention_style, cascade or load_cascade("fusemax"), fit))
    gemm("o_proj", hidden, heads * v_dim)
    elementwise("residual_1", "residual", tokens * hidden)
    elementwise("norm_2", "norm", tokens * hidden, 4.0)
    if model.ffn_matrices > 2:
        gemm("gate_proj", model.ffn, hidden)
        gemm("up_proj", model.ffn, hidden)
        elementwise("silu_mul", "gated_activation", tokens * model.ffn, 5.0)
    else:
        gemm("up_proj", model.ffn, hidden)
        elementwise("activation", "activation", tokens * model.ffn, 8.0)
    gemm("down_proj", hidden, model.ffn)
    elementwise("residual_2", "residual", tokens * hidden)
    return LayerCost(model.name, roofs.target, mode, problem.batch, seq_len, tuple(ops))


def _attention(problem: Problem, target: Any, style_name: str | None, cascade: Any, fit: FittedModel) -> OperatorCost:
    cost = kernel_cost(cascade, problem, target, {"kernel_style": style_name}, model=fit)
    return OperatorCost("attention", "attention", cost.time_s, problem.forward_flops(), cost.hbm_bytes, cost.bound,
                        len(cost.launches), f"{cascade.name}, {cost.kernel_style} style")


@dataclass(frozen=True)
class ModelCost:
    """A whole model: every layer alike, plus the embedding lookup, final norm and LM head."""

    layer: LayerCost
    layers: int
    head: tuple[OperatorCost, ...]
    weight_bytes: float
    kv_cache_bytes: float
    activation_bytes: float

    @property
    def time_s(self) -> float:
        """Prefill: time to first token; decode: time per generated token (all sequences)."""
        return self.layers * self.layer.time_s + sum(op.time_s for op in self.head)

    @property
    def tokens_per_s(self) -> float:
        """Decode: tokens generated per second over the batch; prefill: tokens processed per second."""
        tokens = self.layer.batch * (self.layer.seq_len if self.layer.mode == "prefill" else 1)
        return tokens / self.time_s

    @property
    def memory_bytes(self) -> float:
        return self.weight_bytes + self.kv_cache_bytes + self.activation_bytes


def model_cost(model: Any, seq_len: int, target: Any, mode: str = "prefill", batch: int | None = None,
               attention_style: str | None = None, fit: FittedModel | None = None, cascade: Any = None) -> ModelCost:
    """All layers of `model` plus its LM head (logits of the last position of each sequence) and
    the memory it holds: weights, the KV cache at seq_len, and the largest activation."""
    fit = fit or fitted()
    layer = layer_cost(model, seq_len, target, mode, batch, attention_style, cascade, fit)
    problem = model.problem(seq_len, mode, batch)
    roofs: GpuRoofs = gpu_roofs(target, problem.dtype)
    s = problem.dtype_bytes
    vocab = model.vocab or 0
    head = []
    if vocab:
        cost = gemm_cost(problem.batch, vocab, model.hidden, s, roofs, fit)
        head.append(OperatorCost("lm_head", "gemm", cost.time_s, cost.flops, cost.hbm_bytes, cost.bound,
                                 len(cost.launches)))
    weights = model.layers * model.linear_weight_bytes() + 2 * vocab * model.hidden * s
    kv_cache = (model.layers * 2 * problem.batch * seq_len * model.key_value_heads * model.head_dim * s)
    tokens = problem.batch * problem.q_len
    activation = tokens * max(model.hidden * 4, model.ffn * model.ffn_matrices) * s
    return ModelCost(layer, model.layers, tuple(head), float(weights), float(kv_cache), float(activation))
