"""One whole transformer layer on a spatial target: the attention cascade plus the layer's linear
layers (Q/K/V and output projections, the FFN), each a GEMM from the cascade library.

The paper's end-to-end figures (FuseMax §VI) add exactly these: attention, then the six matmuls
on the 2D array (docs/simulator.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from einsim.errors import ConfigError
from einsim.simulator.estimate import Estimate
from einsim.simulator.mapping import Mapping
from einsim.simulator.simulate import resolve_cascade, resolve_target, simulate
from einsim.problem import Problem


@dataclass(frozen=True)
class LayerEstimate:
    """Attention and the linear layers of one transformer layer, run one after another."""

    attention: Estimate
    linear: tuple[tuple[str, Estimate], ...]  # (name, estimate) per GEMM

    @property
    def latency_s(self) -> float:
        return self.attention.latency_s + sum(e.latency_s for _, e in self.linear)

    @property
    def energy_j(self) -> float:
        return self.attention.energy_j + sum(e.energy_j for _, e in self.linear)

    @property
    def traffic_bytes(self) -> float:
        return self.attention.traffic_bytes + sum(e.traffic_bytes for _, e in self.linear)


def linear_shapes(model) -> list[tuple[str, int, int]]:
    """(name, K, N) of each GEMM of one layer, for rows of `hidden` features per token: the Q, K, V
    projections, the output projection and the FFN (2 matrices, 3 when gated)."""
    q_out = model.heads * model.head_dim
    k_out = model.key_value_heads * model.head_dim
    v_out = model.key_value_heads * (model.v_head_dim or model.head_dim)
    shapes = [("q_proj", model.hidden, q_out), ("k_proj", model.hidden, k_out), ("v_proj", model.hidden, v_out),
              ("out_proj", model.heads * (model.v_head_dim or model.head_dim), model.hidden)]
    shapes += [(f"ffn_in{i + 1}" if model.ffn_matrices > 2 else "ffn_in", model.hidden, model.ffn)
                for i in range(model.ffn_matrices - 1)]
    shapes.append(("ffn_out", model.ffn, model.hidden))
    return shapes


def simulate_linear(name_k_n: tuple[str, int, int], tokens: int, target: Any, dtype: str = "bf16") -> Estimate:
    """One GEMM of `tokens` rows: the library's `gemm` cascade Z[m,n] = A[k,m] * B[k,n] with the
    token rank M kept on chip per block and the weight rank N streamed (§8)."""
    target = resolve_target(target)
    if target.kind != "spatial":
        raise ConfigError(f"{target.name}: whole-layer estimates are modelled on spatial targets only")
    name, k, n = name_k_n
    return _linear(name, k, n, tokens, target, dtype)


@lru_cache(maxsize=512)
def _linear(name: str, k: int, n: int, tokens: int, target, dtype: str) -> Estimate:
    from einsim.simulator.spatial import compile_design

    gemm = resolve_cascade("gemm")
    problem = Problem(batch=1, q_heads=1, q_len=tokens, kv_len=n, head_dim=k, dtype=dtype, name=f"{name} {tokens}x{k}x{n}")
    design = compile_design(gemm, problem, target, Mapping(), key_rank="N", query_rank="M",
                            sizes={"M": tokens, "N": n, "K": k})
    return design.estimate(design.choose())


def simulate_layer(model, seq_len: int, target: Any, cascade: Any, mapping: Any = None,
                   mode: str = "prefill", batch: int | None = None) -> LayerEstimate:
    """Attention (`cascade` on `target` under `mapping`) plus the layer's linear layers for the
    tokens of `model` at `seq_len` (prefill: batch x seq_len tokens; decode: batch)."""
    problem = model.problem(seq_len, mode, batch)
    attention = simulate(cascade, problem, target, mapping)
    tokens = problem.batch * problem.q_len
    linear = tuple((shape[0], simulate_linear(shape, tokens, target, problem.dtype)) for shape in linear_shapes(model))
    return LayerEstimate(attention, linear)
