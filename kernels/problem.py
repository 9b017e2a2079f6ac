"""The attention problem every kernel, config and resource model is stated against, and the
limits of the device a config must fit. Plain Python: no torch, no triton.

Masks follow einsim.einsum_cascades.reference: bottom-right aligned (query row i sits at key
position i + kv_len - q_len), causal keeps keys j <= that position, window=(left, right) keeps
position - left <= j <= position + right, and a row that sees no key returns 0 with lse = -inf.
"""

from __future__ import annotations

from dataclasses import dataclass

from einsim.errors import ShapeError

DTYPE_BYTES = {"bf16": 2, "fp16": 2}
# Full tiles of a causal/windowed problem are counted per visible (query, key) pair: FLOPs are
# visited work, not the dense 4·N²·D that masked kernels would otherwise be credited with.
BACKWARD_FLOP_RATIO = 2.5  # 5 matmuls (QKᵀ again, dV, dP, dQ, dK) against the forward's 2


@dataclass(frozen=True)
class AttentionProblem:
    """One attention call: q [batch, q_heads, q_len, head_dim], k/v [batch, kv_heads, kv_len, .].

    v_head_dim defaults to head_dim. q_heads must be a multiple of kv_heads (GQA/MQA: query head
    h reads key/value head h // (q_heads // kv_heads)).
    """

    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    causal: bool = False
    window: tuple[int, int] | None = None
    dtype: str = "bf16"
    v_head_dim: int | None = None

    def __post_init__(self) -> None:
        for name in ("batch", "q_heads", "kv_heads", "q_len", "kv_len", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ShapeError(f"attention problem: {name} must be a positive integer, got {value!r}")
        if self.v_head_dim is not None and (isinstance(self.v_head_dim, bool)
                                            or not isinstance(self.v_head_dim, int)
                                            or self.v_head_dim <= 0):
            raise ShapeError(f"attention problem: v_head_dim must be a positive integer or None, "
                             f"got {self.v_head_dim!r}")
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
            raise ShapeError(f"attention problem: dtype must be one of {sorted(DTYPE_BYTES)}, "
                             f"got {self.dtype!r}")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.q_heads // self.kv_heads

    @property
    def value_dim(self) -> int:
        return self.v_head_dim if self.v_head_dim is not None else self.head_dim

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def offset(self) -> int:
        """Key position of query row 0 (bottom-right alignment)."""
        return self.kv_len - self.q_len

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

    def _row_ranges(self):
        """lo and hi of every query row's visible keys, as numpy arrays (hi <= lo: none)."""
        import numpy as np

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
        count = 0
        for start in range(0, self.q_len, block_m):
            lo, hi = self.tile_key_range(start, block_m, block_n)
            count += -(-(hi - lo) // block_n)
        return count

    # -- work and traffic ----------------------------------------------------------------------
    def forward_flops(self) -> float:
        """Matmul FLOPs of the forward pass over visible pairs: 2·D for QKᵀ plus 2·Dv for P·V."""
        return float(self.batch * self.q_heads * self.visible_pairs()
                     * 2 * (self.head_dim + self.value_dim))

    def backward_flops(self) -> float:
        """Matmul FLOPs of the backward: QKᵀ recomputed, dV = Pᵀ·dO, dP = dO·Vᵀ, dQ, dK."""
        return float(self.batch * self.q_heads * self.visible_pairs()
                     * 2 * (3 * self.head_dim + 2 * self.value_dim))

    def forward_min_bytes(self) -> int:
        """Compulsory HBM traffic of the forward: Q, the visible K/V span, O and fp32 lse once."""
        s = self.dtype_bytes
        lo, hi = self.visible_key_span()
        q = self.batch * self.q_heads * self.q_len
        kv = self.batch * self.kv_heads * (hi - lo)
        return s * (q * self.head_dim + kv * (self.head_dim + self.value_dim)
                    + q * self.value_dim) + 4 * q

    def backward_min_bytes(self) -> int:
        """Compulsory HBM traffic of the backward: read Q, K, V, O, dO, lse; write dQ, dK, dV."""
        s = self.dtype_bytes
        q = self.batch * self.q_heads * self.q_len
        kv = self.batch * self.kv_heads * self.kv_len
        reads = s * (q * (self.head_dim + 2 * self.value_dim)
                     + kv * (self.head_dim + self.value_dim)) + 4 * q
        writes = s * (q * self.head_dim + kv * (self.head_dim + self.value_dim))
        return reads + writes

    def describe(self) -> str:
        mask = "causal" if self.causal else "full"
        if self.window is not None:
            mask += f" window={self.window}"
        heads = f"{self.q_heads}" if self.q_heads == self.kv_heads else f"{self.q_heads}/{self.kv_heads}"
        return (f"B={self.batch} H={heads} Nq={self.q_len} Nk={self.kv_len} D={self.head_dim}"
                + (f" Dv={self.value_dim}" if self.v_head_dim is not None else "")
                + f" {mask} {self.dtype}")


@dataclass(frozen=True)
class DeviceLimits:
    """What a launch configuration must fit on one GPU.

    shared_memory_per_block is the opt-in maximum one program may allocate (227 KiB on an H100,
    232448 bytes); shared_memory_per_sm is what all resident programs of one SM share.
    """

    name: str = "generic"
    sm_count: int = 132
    shared_memory_per_block: int = 232448
    shared_memory_per_sm: int = 233472
    registers_per_sm: int = 65536
    registers_per_thread: int = 255
    max_threads_per_sm: int = 2048
    max_threads_per_block: int = 1024
    l2_bytes: int = 50 * 1024 * 1024
    compute_capability: tuple[int, int] = (9, 0)

    @classmethod
    def h100(cls) -> "DeviceLimits":
        """NVIDIA H100 SXM5 (sm_90): 132 SMs, 228 KiB shared memory per SM, 227 KiB per block."""
        return cls(name="NVIDIA H100 SXM", sm_count=132, shared_memory_per_block=232448,
                   shared_memory_per_sm=233472, registers_per_sm=65536, max_threads_per_sm=2048,
                   l2_bytes=50 * 1024 * 1024, compute_capability=(9, 0))

    @classmethod
    def from_torch_device(cls, device=None) -> "DeviceLimits":
        """Limits of a CUDA device as torch reports them (imports torch)."""
        import torch

        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        device = torch.device(device)
        if device.type != "cuda":
            # The interpreter on CPU has no shared memory to run out of; check against an H100
            # so a config that could not run on the GPU is still rejected in CI.
            return cls.h100()
        props = torch.cuda.get_device_properties(device)
        base = cls()
        smem_block = (getattr(props, "shared_memory_per_block_optin", 0)
                      or getattr(props, "shared_memory_per_block", 0) or base.shared_memory_per_block)
        smem_sm = getattr(props, "shared_memory_per_multiprocessor", 0) or max(smem_block, base.shared_memory_per_sm)
        return cls(
            name=props.name,
            sm_count=props.multi_processor_count,
            shared_memory_per_block=int(smem_block),
            shared_memory_per_sm=int(smem_sm),
            registers_per_sm=int(getattr(props, "regs_per_multiprocessor", 0) or base.registers_per_sm),
            max_threads_per_sm=int(getattr(props, "max_threads_per_multi_processor", 0)
                                   or base.max_threads_per_sm),
            l2_bytes=int(getattr(props, "L2_cache_size", 0) or base.l2_bytes),
            compute_capability=(props.major, props.minor),
        )


def next_power_of_two(value: int) -> int:
    """Smallest power of two >= value (Triton's aranges must be powers of two)."""
    return 1 << max(0, (int(value) - 1).bit_length())


def padded_head_dim(head_dim: int) -> int:
    """Head dims as kernels tile them: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, next_power_of_two(head_dim))


def shared_memory_reasons(need: int, limits: DeviceLimits | None, what: str = "its tiles") -> list[str]:
    """Why a program that needs `need` bytes of shared memory cannot launch (empty if it can).

    One wording for every kernel family, so users and the autotuner see the same fix.
    """
    limit = (limits or DeviceLimits.h100()).shared_memory_per_block
    if need > limit:
        return [f"needs {need} bytes of shared memory per program for {what}, the device allows "
                f"{limit}: lower BLOCK_N/BLOCK_M or num_stages"]
    return []
