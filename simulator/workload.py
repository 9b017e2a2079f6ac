"""The attention workload a simulation is about: one attention layer's shape.

Model presets (simulator/models/*.yaml) and `--shape B,H,N,D` both produce a `Workload`; the model
binds its fields to the cascade's rank symbols through `rank_sizes()`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from einsim.errors import ShapeError


@dataclass(frozen=True)
class Workload:
    """Shape of one attention layer (self-attention when q_len == kv_len).

    Conventions follow einsim.einsum_cascades.reference: GQA when kv_heads < heads, causal and
    window masks aligned bottom-right, window=(left, right).
    """

    batch: int
    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    kv_heads: int | None = None
    v_head_dim: int | None = None
    causal: bool = False
    window: tuple[int, int] | None = None
    dtype_bytes: int = 2
    name: str = ""
    # the model's width, for the rest-of-layer cascades (ffn binds `hidden` and `ffn_dim`);
    # None for a bare --shape, where those cascades keep their own defaults
    hidden: int | None = None
    ffn_dim: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("batch", "heads", "q_len", "kv_len", "head_dim", "dtype_bytes"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or value <= 0:
                raise ShapeError(f"workload {field_name} must be a positive integer, got {value!r}")
        if self.kv_heads is not None and (self.kv_heads <= 0 or self.heads % self.kv_heads):
            raise ShapeError(
                f"workload kv_heads={self.kv_heads} must divide heads={self.heads} (grouped-query attention)"
            )
        if self.window is not None and (len(self.window) != 2 or min(self.window) < 0):
            raise ShapeError(f"workload window must be (left, right) with both >= 0, got {self.window!r}")

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    @property
    def value_dim(self) -> int:
        return self.v_head_dim if self.v_head_dim is not None else self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.heads // self.key_value_heads

    def rank_sizes(self) -> dict[str, int]:
        """Sizes for the paper's rank names and the library's size symbols."""
        return {
            "B": self.batch,
            "H": self.heads,
            "G": self.key_value_heads,
            "E": self.head_dim,
            "F": self.value_dim,
            "M": self.kv_len,
            "P": self.q_len,
            "kv_len": self.kv_len,
            "q_len": self.q_len,
            **({"hidden": self.hidden} if self.hidden is not None else {}),
            **({"ffn_dim": self.ffn_dim} if self.ffn_dim is not None else {}),
        }

    def with_seq_len(self, seq_len: int) -> "Workload":
        """The same layer at another sequence length (q_len follows unless this is decode)."""
        q_len = self.q_len if self.q_len != self.kv_len else seq_len
        return replace(self, q_len=q_len, kv_len=seq_len)
