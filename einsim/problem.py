"""The one attention call every layer speaks of: shapes, mask, dtype (`Problem`).

The simulator estimates it, the kernels run it, the autotuner tunes for it, the plots draw it and
the CLI parses it; nothing else describes an attention call. Plain Python (numpy for exact
counting): the bottom layer, importing only einsim.errors, einsim.filter_inputs and einsim.tiling.

Masks follow einsim.einsum_cascades.reference: bottom-right aligned (query row i sits at key
position i + kv_len - q_len), causal keeps keys j <= that position, window=(left, right) keeps
position - left <= j <= position + right, and a row that sees no key returns 0 with lse = -inf.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from einsim.errors import ShapeError, brief
from einsim.filter_inputs import FilterInputs
from einsim.tiling import TileCounts, key_tile_counts, tile_counts

# Bytes per element of each dtype an attention call may be stated in.
DTYPE_BYTES = {"fp8": 1, "bf16": 2, "fp16": 2, "fp32": 4}

_SIZE_FIELDS = ("batch", "q_heads", "kv_heads", "q_len", "kv_len", "head_dim", "v_head_dim")

# The largest sizes a Problem takes (docs/reliability.md): beyond any attention call that exists,
# and small enough that exact per-tile counting (numpy arrays of q_len / block rows) and every
# tensor allocated for the call stay within memory. Checked before anything is allocated.
MAX_SIZES = {"batch": 1 << 24, "q_heads": 1 << 16, "kv_heads": 1 << 16, "q_len": 1 << 27, "kv_len": 1 << 27,
             "head_dim": 1 << 16, "v_head_dim": 1 << 16}
MAX_TENSOR_ELEMENTS = 1 << 48  # elements of q, k or v (512 TB in bf16)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One attention call: q [batch, q_heads, q_len, head_dim], k [batch, kv_heads, kv_len,
    head_dim], v [batch, kv_heads, kv_len, v_head_dim].

    kv_heads defaults to q_heads and must divide it (GQA/MQA: query head h reads key/value head
    h // group_size); v_head_dim defaults to head_dim. Both are always integers once built.
    `name` labels the call in reports (a model preset's `BERT/prefill/4096`) and takes no part in
    equality. `symbols` binds size symbols beyond attention's own ranks for cascades that name
    them, e.g. a model's `hidden` and `ffn_dim` for the rest-of-layer cascades (ffn.yaml).
    Keyword-only: six integers in a row are too easy to pass in the wrong order.
    """

    batch: int
    q_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    kv_heads: int | None = None
    v_head_dim: int | None = None
    causal: bool = False
    window: tuple[int, int] | None = None
    dtype: str = "bf16"
    name: str = field(default="", compare=False)
    symbols: tuple[tuple[str, int], ...] = ()
    # Serving decode: sequence b's cache holds kv_lens[b] <= kv_len keys (kv_len is then the
    # capacity); None: every sequence holds kv_len. Work and traffic count each sequence's own.
    kv_lens: tuple[int, ...] | None = None
    # The values of the tensors a cascade's filters read (document ids, a block mask), or a
    # statistical description of them: the simulators price the tiles they empty. None: not given
    # (a filter that reads data is then priced as the problem's own mask, an upper bound).
    filter_inputs: FilterInputs | None = None

    def __post_init__(self) -> None:
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.q_heads)
        if self.v_head_dim is None:
            object.__setattr__(self, "v_head_dim", self.head_dim)
        for name in _SIZE_FIELDS:
            value = getattr(self, name)
            if not _is_count(value):
                raise ShapeError(f"attention problem: {name} must be a positive integer, got {brief(value)}")
            if value > MAX_SIZES[name]:
                raise ShapeError(f"attention problem: {name}={value} is beyond the largest einsim takes "
                                 f"({MAX_SIZES[name]}); docs/reliability.md")
        for tensor, heads, length, dim in (("q", self.q_heads, self.q_len, self.head_dim),
                                           ("k", self.kv_heads, self.kv_len, self.head_dim),
                                           ("v", self.kv_heads, self.kv_len, self.v_head_dim)):
            if self.batch * heads * length * dim > MAX_TENSOR_ELEMENTS:
                raise ShapeError(f"attention problem: {tensor} would hold {self.batch * heads * length * dim:.3g} "
                                 f"elements, beyond the largest einsim takes ({MAX_TENSOR_ELEMENTS:.3g})")
        if self.q_heads % self.kv_heads:
            raise ShapeError(f"attention problem: q_heads={self.q_heads} must be a multiple of "
                             f"kv_heads={self.kv_heads} (grouped-query attention)")
        if not isinstance(self.causal, bool):
            raise ShapeError(f"attention problem: causal must be True or False, got {self.causal!r}")
        if self.window is not None:
            window = self.window
            if (not isinstance(window, (tuple, list)) or len(window) != 2
                    or any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in window)):
                raise ShapeError(f"attention problem: window must be (left, right), two integers "
                                 f">= 0, or None; got {window!r}")
            object.__setattr__(self, "window", (int(window[0]), int(window[1])))
        if self.dtype not in DTYPE_BYTES:
            raise ShapeError(f"attention problem: dtype must be one of {', '.join(DTYPE_BYTES)}, "
                             f"got {self.dtype!r}")
        object.__setattr__(self, "symbols", _symbols(self.symbols))
        if self.kv_lens is not None:
            lens = self.kv_lens
            if (not isinstance(lens, (tuple, list)) or len(lens) != self.batch
                    or any(isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.kv_len
                           for n in lens)):
                raise ShapeError(f"attention problem: kv_lens must list {self.batch} cache lengths (one "
                                 f"per sequence), each 0..kv_len={self.kv_len}; got {brief(lens)}")
            object.__setattr__(self, "kv_lens", tuple(int(n) for n in lens))
        object.__setattr__(self, "filter_inputs", FilterInputs.of(self.filter_inputs))

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without GQA)."""
        return self.q_heads // self.kv_heads

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def offset(self) -> int:
        """Key position of query row 0 (bottom-right alignment)."""
        return self.kv_len - self.q_len

    @property
    def label(self) -> str:
        """How reports name this call: its name, else its shape."""
        return self.name or self.describe()

    def rank_sizes(self) -> dict[str, int]:
        """Sizes for the paper's rank names (B, H, G, E, F, M, P), the library's size symbols
        (batch, heads, kv_heads, head_dim, v_head_dim, q_len, kv_len: what its YAML declares the
        ranks with, and a user's expressions may name) and this problem's extra `symbols`: what
        `Cascade.bind` takes, the one mapping from a Problem to a cascade's sizes."""
        return {
            "B": self.batch,
            "H": self.q_heads,
            "G": self.kv_heads,
            "E": self.head_dim,
            "F": self.v_head_dim,
            "M": self.kv_len,
            "P": self.q_len,
            "batch": self.batch,
            "heads": self.q_heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "v_head_dim": self.v_head_dim,
            "kv_len": self.kv_len,
            "q_len": self.q_len,
            **dict(self.symbols),
        }

    def with_seq_len(self, seq_len: int) -> "Problem":
        """The same call at another sequence length (q_len follows unless this is decode)."""
        q_len = self.q_len if self.q_len != self.kv_len else seq_len
        return replace(self, q_len=q_len, kv_len=seq_len)

    # -- the mask ------------------------------------------------------------------------------
    def row_key_range(self, row: int) -> tuple[int, int]:
        """Keys [lo, hi) query row `row` sees (hi <= lo when it sees none)."""
        position = row + self.offset
        lo, hi = 0, self.kv_len
        if self.causal:
            hi = min(hi, position + 1)
        if self.window is not None:
            lo = max(lo, position - self.window[0])
            hi = min(hi, position + self.window[1] + 1)
        return lo, hi

    def tile_key_range(self, start_m: int, block_m: int, block_n: int) -> tuple[int, int]:
        """Keys [lo, hi) the query tile at `start_m` visits; lo rounded down to a key tile.

        Every kernel skips fully masked key tiles with exactly this range, so the simulator's and
        autotuner's tile counts match what runs.
        """
        first = start_m
        last = min(start_m + block_m, self.q_len) - 1
        lo = self.row_key_range(first)[0]
        hi = self.row_key_range(last)[1]
        lo = (max(0, lo) // block_n) * block_n
        return lo, max(lo, hi)

    def _row_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """lo and hi of every query row's visible keys, as numpy arrays (hi <= lo: none)."""
        position = np.arange(self.q_len, dtype=np.int64) + self.offset
        lo = np.zeros(self.q_len, dtype=np.int64)
        hi = np.full(self.q_len, self.kv_len, dtype=np.int64)
        if self.causal:
            hi = np.minimum(hi, position + 1)
        if self.window is not None:
            lo = np.maximum(lo, position - self.window[0])
            hi = np.minimum(hi, position + self.window[1] + 1)
        return lo, hi

    def visible_pairs(self) -> int:
        """(query, key) pairs one query head sees (exact; the oracle's mask summed)."""
        lo, hi = self._row_ranges()
        return int((hi - lo).clip(0, None).sum())

    def visible_key_span(self) -> tuple[int, int]:
        """Keys [lo, hi) that at least one query row sees (row ranges slide by one key per row,
        so their union is one span); (0, 0) when no row sees any key."""
        lo, hi = self._row_ranges()
        seen = hi > lo
        if not seen.any():
            return 0, 0
        return int(lo[seen].min()), int(hi[seen].max())

    def visited_tiles(self, block_m: int, block_n: int) -> int:
        """(query tile, key tile) pairs one query head visits with the tile-skipping of kernels."""
        return int(self.tile_counts(block_m, block_n).visited.sum())

    def tile_counts(self, block_m: int, block_n: int) -> TileCounts:
        """Per query tile of `block_m` rows: the key tiles of `block_n` it visits and how many of
        them the mask leaves whole (the one tile counter: kernels, simulator and autotuner)."""
        return tile_counts(self.q_len, self.kv_len, self.causal, self.window, block_m, block_n)

    def key_tile_counts(self, block_m: int, block_n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per key tile of `block_n` keys: (query tiles of `block_m` rows that visit it, of which
        whole); what a backward's dK/dV programs walk (the transpose of `tile_counts`)."""
        return key_tile_counts(self.q_len, self.kv_len, self.causal, self.window, block_m, block_n)

    # -- work and traffic ----------------------------------------------------------------------
    def sequences(self) -> list["Problem"]:
        """One batch-1 problem per sequence with its own cache length (kv_lens), or [self]
        when every sequence has kv_len keys. Sequences with an empty cache are left out."""
        if self.kv_lens is None:
            return [self]
        return [replace(self, batch=1, kv_len=n, kv_lens=None) for n in self.kv_lens if n > 0]

    def forward_flops(self) -> float:
        """Matmul FLOPs of the forward pass over visible pairs: 2·D for QKᵀ plus 2·Dv for P·V.
        Masked tiles are not credited: FLOPs are visited work, not the dense 4·N²·D."""
        if self.kv_lens is not None:
            return float(sum(p.forward_flops() for p in self.sequences()))
        return float(self.batch * self.q_heads * self.visible_pairs()
                     * 2 * (self.head_dim + self.v_head_dim))

    def backward_flops(self) -> float:
        """Matmul FLOPs of the backward: QKᵀ recomputed, dV = Pᵀ·dO, dP = dO·Vᵀ, dQ, dK."""
        return float(self.batch * self.q_heads * self.visible_pairs()
                     * 2 * (3 * self.head_dim + 2 * self.v_head_dim))

    def forward_min_bytes(self) -> int:
        """Compulsory HBM traffic of the forward: Q, the visible K/V span, O and fp32 lse once
        (each sequence's own span with kv_lens)."""
        if self.kv_lens is not None:
            empty = self.batch - len(self.sequences())
            q = empty * self.q_heads * self.q_len  # an empty sequence still reads Q, writes O, lse
            return sum(p.forward_min_bytes() for p in self.sequences()) + q * (
                self.dtype_bytes * (self.head_dim + self.v_head_dim) + 4)
        s = self.dtype_bytes
        lo, hi = self.visible_key_span()
        q = self.batch * self.q_heads * self.q_len
        kv = self.batch * self.kv_heads * (hi - lo)
        return s * (q * self.head_dim + kv * (self.head_dim + self.v_head_dim)
                    + q * self.v_head_dim) + 4 * q

    def backward_min_bytes(self) -> int:
        """Compulsory HBM traffic of the backward: read Q, K, V, O, dO, lse; write dQ, dK, dV."""
        s = self.dtype_bytes
        q = self.batch * self.q_heads * self.q_len
        kv = self.batch * self.kv_heads * self.kv_len
        reads = s * (q * (self.head_dim + 2 * self.v_head_dim)
                     + kv * (self.head_dim + self.v_head_dim)) + 4 * q
        writes = s * (q * self.head_dim + kv * (self.head_dim + self.v_head_dim))
        return reads + writes

    # -- text and JSON -------------------------------------------------------------------------
    def describe(self) -> str:
        """One line: `B=2 H=32/8 Nq=1024 Nk=1024 D=128 causal bf16`."""
        mask = "causal" if self.causal else "full"
        if self.window is not None:
            mask += f" window={self.window}"
        heads = f"{self.q_heads}" if self.q_heads == self.kv_heads else f"{self.q_heads}/{self.kv_heads}"
        lens = ""
        if self.kv_lens is not None:
            lens = f" kv_lens={min(self.kv_lens)}..{max(self.kv_lens)} (mean {sum(self.kv_lens) / self.batch:.0f})"
        inputs = f" filters read {self.filter_inputs.describe()}" if self.filter_inputs is not None else ""
        return (f"B={self.batch} H={heads} Nq={self.q_len} Nk={self.kv_len} D={self.head_dim}"
                + (f" Dv={self.v_head_dim}" if self.v_head_dim != self.head_dim else "")
                + f" {mask} {self.dtype}{lens}{inputs}")

    def to_dict(self) -> dict[str, Any]:
        """The call as JSON-ready values: the shape fields, then `name` and `symbols` when set.
        Reports and tuning caches store this; `Problem.from_dict` reads it back."""
        values: dict[str, Any] = {name: getattr(self, name) for name in _SIZE_FIELDS}
        values.update(causal=self.causal, window=list(self.window) if self.window is not None else None,
                      dtype=self.dtype)
        if self.name:
            values["name"] = self.name
        if self.symbols:
            values["symbols"] = dict(self.symbols)
        if self.kv_lens is not None:
            values["kv_lens"] = list(self.kv_lens)
        if self.filter_inputs is not None:
            values["filter_inputs"] = self.filter_inputs.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "problem") -> "Problem":
        """The Problem `to_dict` wrote (ShapeError naming `source` and the field on bad input)."""
        if not isinstance(values, Mapping):
            raise ShapeError(f"{source}: expected a mapping of problem fields, got {values!r}")
        known = set(_SIZE_FIELDS) | {"causal", "window", "dtype", "name", "symbols", "kv_lens", "filter_inputs"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ShapeError(f"{source}: unknown problem field(s) {', '.join(map(str, unknown))}; "
                             f"known: {', '.join(sorted(known))}")
        missing = [name for name in ("batch", "q_heads", "q_len", "kv_len", "head_dim") if name not in values]
        if missing:
            raise ShapeError(f"{source}: missing problem field(s) {', '.join(missing)}")
        kwargs = dict(values)
        if isinstance(kwargs.get("window"), list):
            kwargs["window"] = tuple(kwargs["window"])
        if isinstance(kwargs.get("kv_lens"), list):
            kwargs["kv_lens"] = tuple(kwargs["kv_lens"])
        if kwargs.get("filter_inputs") is not None:
            kwargs["filter_inputs"] = FilterInputs.from_dict(kwargs["filter_inputs"], f"{source}: filter_inputs")
        return cls(**kwargs)


def _symbols(symbols: Any) -> tuple[tuple[str, int], ...]:
    """`symbols` as sorted (name, size) pairs: hashable, and equal however they were given."""
    items = symbols.items() if isinstance(symbols, Mapping) else symbols
    try:
        pairs = tuple(sorted((str(name), size) for name, size in items))
    except (TypeError, ValueError):
        raise ShapeError(f"attention problem: symbols must map names to sizes, got {symbols!r}") from None
    for name, size in pairs:
        if not name.isidentifier() or not _is_count(size):
            raise ShapeError(f"attention problem: symbols[{name!r}] must be a positive integer "
                             f"named by an identifier, got {size!r}")
    return pairs
