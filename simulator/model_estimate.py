"""A transformer layer and a whole model on any target, operator by operator: on a GPU the one
cost model prices every operator (gpu_cost/layer.py); on a spatial accelerator the spatial model
runs attention and the linear layers (layer.py) and the element-wise operators are not modelled
(noted). One result type, `ModelCost`, for both (docs/simulator.md § GPU cost model, "Layers and
models")."""

from __future__ import annotations

from typing import Any

from einsim.errors import ConfigError
from einsim.simulator.gpu_cost.layer import LayerCost, ModelCost, OperatorCost, model_cost
from einsim.simulator.simulate import resolve_cascade, resolve_target

SPATIAL_NOTE = "spatial targets: norms, rotary, activations and residuals are not modelled (attention and GEMMs only)"


def estimate_model(model: Any, seq_len: int, target: Any, mode: str = "prefill", batch: int | None = None,
                   attention_style: str | None = None, cascade: Any = "fusemax") -> ModelCost:
    """`model` (a ModelPreset) at `seq_len` in `mode` on `target` (a Target or preset name)."""
    target = resolve_target(target)
    if target.kind == "gpu":
        return model_cost(model, seq_len, target, mode, batch, attention_style, cascade=resolve_cascade(cascade))
    if target.kind != "spatial":
        raise ConfigError(f"{target.name}: kind {target.kind!r}: layer estimates take a gpu or spatial target")
    return _spatial(model, seq_len, target, mode, batch, resolve_cascade(cascade))


def _spatial(model: Any, seq_len: int, target: Any, mode: str, batch: int | None, cascade: Any) -> ModelCost:
    from einsim.simulator.layer import simulate_layer

    layer = simulate_layer(model, seq_len, target, cascade, mode=mode, batch=batch)
    problem = model.problem(seq_len, mode, batch)
    operators = [_operator("attention", "attention", layer.attention, problem.forward_flops())]
    for name, estimate in layer.linear:
        operators.append(_operator(name, "gemm", estimate, 2.0 * estimate.compute_ops.get("mac", 0.0)))
    cost = LayerCost(model.name, target.name, mode, problem.batch, seq_len, tuple(operators), (SPATIAL_NOTE,))
    s = problem.dtype_bytes
    weights = model.layers * model.linear_weight_bytes() + 2 * (model.vocab or 0) * model.hidden * s
    kv_cache = model.layers * 2 * problem.batch * seq_len * model.key_value_heads * model.head_dim * s
    tokens = problem.batch * problem.q_len
    return ModelCost(cost, model.layers, (), float(weights), float(kv_cache),
                     float(tokens * max(model.hidden * 4, model.ffn * model.ffn_matrices) * s))


def _operator(name: str, kind: str, estimate: Any, flops: float) -> OperatorCost:
    return OperatorCost(name, kind, estimate.latency_s, flops, estimate.traffic_bytes, estimate.bound, 1,
                        estimate.cascade)
