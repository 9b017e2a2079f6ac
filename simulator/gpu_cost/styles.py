"""Kernel styles: how a family of attention kernels is built (its tiles, its MMA instructions,
how it computes dQ) and the few numbers measured times pin down about it. A style is one
calibrated parameter set of the one GPU cost model, never a separate model.

The structural part of each style is read off the kernel's source (cited below); the fitted part
comes from `fitted.yaml`, which `benchmarks/fit_gpu_model.py` writes from the measurements in
`benchmarks/data/` (docs/simulator.md § GPU cost model, "Kernel styles").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import yaml

from einsim.errors import ConfigError
from einsim.simulator.gpu_cost.engine import EngineConstants
from einsim.simulator.gpu_cost.resources import RegisterModel

FITTED_FILE = Path(__file__).with_name("fitted.yaml")


@dataclass(frozen=True)
class Tiles:
    """A kernel's launch shape for head dims up to `max_head_dim`."""

    max_head_dim: int
    block_m: int  # query rows per program (forward, dQ)
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class StyleFit:
    """The fitted numbers of one style (fitted.yaml)."""

    mma_efficiency: float  # its MMA instructions on full tiles, as a fraction of the measured matmul roof
    softmax_overlap: float  # fraction of the shorter of matmul and softmax hidden, one instruction stream
    extra_fma_per_score: float  # FP32 lane work per score beyond the cascade's (scale, convert, bookkeeping)
    mask_fma_per_score: float  # extra lane work per score on tiles the mask cuts (index math, select)
    program_latency_s: float  # fixed latency of a program: Q load, epilogue, O store, scheduling
    bwd_mma_efficiency: float  # the backward's MMA efficiency (dK/dV and dQ loops)
    bwd_fma_per_score: float  # the backward's lane work per score (dS = P (dP - delta), scaling, converts)
    bwd_program_latency_s: float  # fixed latency of a backward program: K/V (or Q) load, dK/dV (dQ) epilogue, atomics drain


@dataclass(frozen=True)
class GemmFit:
    """The fitted numbers of dense matmuls (cuBLAS on the GPU: the linear layers of a model)."""

    mma_efficiency: float  # of the measured matmul roof, on full tiles
    program_latency_s: float  # fixed cost of one output tile's program (prologue, epilogue, scheduling)
    hbm_efficiency: float  # of the HBM roof, for the weight streams of skinny (decode) matmuls


@dataclass(frozen=True)
class ElementwiseFit:
    """The fitted number of eager element-wise kernels (norms, rotary, activations, residuals)."""

    strided_efficiency: float  # of the HBM roof, for element-wise kernels on strided (transposed) views


@dataclass(frozen=True)
class KernelStyle:
    """One family of attention kernels (see STYLES)."""

    name: str
    description: str
    source: str  # where the structural facts below come from
    mma: str  # "wgmma" | "mma_sync" | "triton" (Triton picks wgmma or mma.sync per config)
    warpgroups: int  # independent MMA/softmax streams per program (ping-pong consumers)
    forward: tuple[Tiles, ...]
    backward_dkdv: tuple[Tiles, ...]  # the dK/dV loop: block_m query rows per step, block_n keys per program
    backward_dq: tuple[Tiles, ...]  # the dQ loop (unused with dq="atomic")
    decode: tuple[Tiles, ...]  # tiles when a program holds a few query rows (q_len x group <= 64)
    dq: str  # "separate" (own kernel), "one_launch" (dQ programs in the dK/dV grid), "atomic"
    longest_first: bool  # causal: the longest query tiles are dispatched first
    architectures: tuple[str, ...]  # GPU families the kernel runs on (Target.architecture)
    head_dim_multiple: int  # head dims are padded to a multiple of this in the MMAs (0: a power of two)
    fit: StyleFit

    def padded(self, dim: int) -> int:
        """The head dim the kernel's matmuls run at (Triton pads to a power of two, >= 16)."""
        if self.head_dim_multiple == 0:
            return max(16, 1 << (dim - 1).bit_length())
        return -(-dim // self.head_dim_multiple) * self.head_dim_multiple

    def tiles(self, head_dim: int, which: str = "forward") -> Tiles:
        """The style's tiles for a head dim (the smallest entry that covers it)."""
        table = {"forward": self.forward, "dkdv": self.backward_dkdv, "dq": self.backward_dq,
                 "decode": self.decode}[which]
        for entry in table:
            if head_dim <= entry.max_head_dim:
                return entry
        return table[-1]


def _tiles(*rows: tuple[int, int, int, int, int]) -> tuple[Tiles, ...]:
    return tuple(Tiles(*row) for row in rows)


# The structural facts of each style (not fitted).
_STRUCTURE = {
    "cudnn": dict(
        description="cuDNN SDPA / FlashAttention-3 on Hopper: wgmma, TMA, two consumer warpgroups in ping-pong",
        source="FlashAttention-3 (Shah et al. 2024) hopper/tile_size.h: 128 x 128 (D <= 128) with 2 consumer "
               "warpgroups + 1 producer; cuDNN's Hopper SDPA is the same design (its tiles are not published)",
        mma="wgmma", warpgroups=2, dq="atomic", longest_first=True, architectures=("hopper",), head_dim_multiple=8,
        forward=_tiles((64, 128, 128, 12, 2), (128, 128, 128, 12, 2), (256, 128, 80, 12, 2)),
        backward_dkdv=_tiles((64, 128, 128, 12, 2), (128, 64, 128, 12, 2), (256, 64, 80, 12, 2)),
        backward_dq=_tiles((256, 128, 128, 12, 2)),
        decode=_tiles((256, 64, 128, 4, 2)),
    ),
    "fa2": dict(
        description="FlashAttention-2 (torch SDPA's flash backend) on Hopper: Ampere mma.sync, cp.async",
        source="flash-attention csrc/flash_attn/src/flash_fwd_launch_template.h (run_mha_fwd_hdim64: "
               "128 x 128, 4 warps; hdim128: 128 x 64, 4 warps); flash_bwd_launch_template.h (hdim64: "
               "128 x 128, 8 warps; hdim128: 64 x 128, 8 warps); dQ accumulated with atomics in fp32; head dims "
               "instantiated in steps of 32 (hdim32 .. hdim256); decode (flash_fwd_splitkv): 64-row tiles, "
               "128 keys for hdim <= 128, 4 warps; split-KV by num_splits_heuristic",
        mma="mma_sync", warpgroups=1, dq="atomic", longest_first=False, architectures=("hopper", "ampere", "cdna3"), head_dim_multiple=32,
        forward=_tiles((64, 128, 128, 4, 2), (128, 128, 64, 4, 2), (256, 128, 64, 8, 2)),
        backward_dkdv=_tiles((64, 128, 128, 8, 2), (128, 64, 128, 8, 2), (256, 64, 64, 8, 2)),
        backward_dq=_tiles((256, 64, 128, 8, 2)),
        decode=_tiles((128, 64, 128, 4, 2), (256, 64, 64, 4, 2)),
    ),
    "flex": dict(
        description="FlexAttention (torch.compile'd Triton template) on Hopper",
        source="torch/_inductor/kernel/flex_attention.py _h100_default_config (bf16: D64 128 x 128, 4 warps, "
               "3 stages; D128 128 x 64, 8 warps, 3 stages); its backward computes dQ and dK/dV programs "
               "in one grid (flex_attention_backward template), 64 x 128 blocks, 8 warps; head dims padded to a "
               "power of two (Triton's tl.arange); decode: flex_decoding, 16-row blocks, split-KV",
        mma="triton", warpgroups=1, dq="one_launch", longest_first=False, architectures=("hopper", "ampere", "cdna3"), head_dim_multiple=0,
        forward=_tiles((64, 128, 128, 4, 3), (128, 128, 64, 8, 3), (256, 64, 32, 4, 3)),
        backward_dkdv=_tiles((256, 64, 128, 8, 3)),
        backward_dq=_tiles((256, 128, 64, 8, 3)),
        decode=_tiles((256, 16, 64, 4, 3)),
    ),
    "einsim": dict(
        description="einsim's fused forward and backward (kernels/flash: attention-fwd, attention-bwd)",
        source="kernels/flash/config.py default_config (D64 128 x 128 (causal 64 x 128), 4 warps, 3 stages; "
               "D128 128 x 128, 8 warps, 3 stages; backward D64 64 x 64, 4 warps, 2 stages; D128 dK/dV "
               "64 x 128, dQ 128 x 64, 8 warps, 3 stages); the autotuner passes each config it prices",
        mma="triton", warpgroups=1, dq="separate", longest_first=True, architectures=("hopper", "ampere", "cdna3"), head_dim_multiple=0,
        forward=_tiles((64, 128, 128, 4, 3), (128, 128, 128, 8, 3), (256, 64, 64, 4, 2)),
        backward_dkdv=_tiles((64, 64, 64, 4, 2), (128, 64, 128, 8, 3), (256, 32, 64, 8, 1)),
        backward_dq=_tiles((64, 64, 64, 4, 2), (128, 128, 64, 8, 3), (256, 64, 32, 8, 1)),
        decode=_tiles((128, 16, 128, 4, 3), (256, 16, 64, 4, 3)),
    ),
    "einsim-multipass": dict(
        description="einsim's 2- and 3-pass forwards (kernels/multipass): one launch per pass, intermediates "
                    "recomputed or materialised in HBM",
        source="kernels/multipass/config.py default_config (D64 128 x 64, 4 warps; D128 128 x 64, 8 warps; "
               "3 stages)",
        mma="triton", warpgroups=1, dq="separate", longest_first=False, architectures=("hopper", "ampere", "cdna3"), head_dim_multiple=0,
        forward=_tiles((64, 128, 64, 4, 3), (128, 128, 64, 8, 3), (256, 64, 32, 4, 3)),
        backward_dkdv=_tiles((256, 64, 64, 4, 2)), backward_dq=_tiles((256, 64, 64, 4, 2)),
        decode=_tiles((256, 64, 64, 4, 3)),
    ),
    "einsim-decode": dict(
        description="einsim's split-KV decode (kernels/decode): the GQA group packed in one 16..64-row tile, "
                    "K/V chunks reduced in parallel, then a merge launch",
        source="kernels/decode/config.py default_config (BLOCK_M 16..64, BLOCK_N 128 for D <= 128, 4 warps, "
               "3 stages; splits by choose_num_splits)",
        mma="triton", warpgroups=1, dq="separate", longest_first=False, architectures=("hopper", "ampere", "cdna3"), head_dim_multiple=0,
        forward=_tiles((128, 16, 128, 4, 3), (256, 16, 64, 4, 3)),
        backward_dkdv=_tiles((256, 64, 64, 4, 2)), backward_dq=_tiles((256, 64, 64, 4, 2)),
        decode=_tiles((128, 16, 128, 4, 3), (256, 16, 64, 4, 3)),
    ),
}


@dataclass(frozen=True)
class FittedModel:
    """Everything fitted.yaml holds: the engine's constants and each style's numbers."""

    engine: EngineConstants
    mma_sync_ratio: float  # Triton kernels that fall back to mma.sync reach this fraction of wgmma's rate
    wgmma_n_exponent: float  # a wgmma with N below 128 (BLOCK_N, Dv) loses (N/128)^exponent of its rate
    registers: RegisterModel  # registers per thread of Triton flash programs (ptxas counts)
    gemm: GemmFit
    elementwise: ElementwiseFit
    styles: dict[str, StyleFit]
    provenance: dict


def read_fitted(path: Path = FITTED_FILE) -> FittedModel:
    """The fitted constants (ConfigError naming the file and field when one is missing or bad)."""
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping")

    def numbers(section: object, cls: type, where: str) -> dict:
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {where}: expected a mapping of {cls.__name__} fields")
        wanted = [f.name for f in fields(cls)]
        missing = [name for name in wanted if name not in section]
        unknown = sorted(set(section) - set(wanted))
        if missing or unknown:
            raise ConfigError(f"{path}: {where}: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}")
        values = {}
        for name in wanted:
            value = section[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{path}: {where}.{name}: expected a number, got {value!r}")
            values[name] = float(value)
        return values

    engine = EngineConstants(**numbers(document.get("engine"), EngineConstants, "engine"))
    styles_section = document.get("styles")
    if not isinstance(styles_section, dict) or set(styles_section) != set(_STRUCTURE):
        raise ConfigError(f"{path}: styles: expected exactly {', '.join(_STRUCTURE)}")
    styles = {name: StyleFit(**numbers(styles_section[name], StyleFit, f"styles.{name}")) for name in _STRUCTURE}
    triton = document.get("triton")
    if not isinstance(triton, dict) or not all(isinstance(triton.get(k), (int, float)) for k in ("mma_sync_ratio", "wgmma_n_exponent")):
        raise ConfigError(f"{path}: triton: expected mma_sync_ratio and wgmma_n_exponent numbers")
    registers = RegisterModel(**numbers(document.get("registers"), RegisterModel, "registers"))
    gemm = GemmFit(**numbers(document.get("gemm"), GemmFit, "gemm"))
    elementwise = ElementwiseFit(**numbers(document.get("elementwise"), ElementwiseFit, "elementwise"))
    return FittedModel(engine, float(triton["mma_sync_ratio"]), float(triton["wgmma_n_exponent"]), registers,
                       gemm, elementwise, styles, dict(document.get("provenance") or {}))


@lru_cache(maxsize=1)
def fitted() -> FittedModel:
    return read_fitted()


def style(name: str, model: FittedModel | None = None) -> KernelStyle:
    """The kernel style called `name` (ConfigError listing the known ones)."""
    if name not in _STRUCTURE:
        raise ConfigError(f"unknown kernel style {name!r}; known: {', '.join(_STRUCTURE)}")
    model = model or fitted()
    return KernelStyle(name=name, fit=model.styles[name], **_STRUCTURE[name])


STYLE_NAMES = tuple(_STRUCTURE)
# the kernel a user gets on each family when the mapping names no style: cuDNN's SDPA on Hopper,
# FlashAttention-2's design (cuDNN's and CK's kernels on Ampere and CDNA follow it) elsewhere
DEFAULT_STYLE = {"hopper": "cudnn", "ampere": "fa2", "cdna3": "fa2"}
