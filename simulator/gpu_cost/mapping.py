"""How a cascade is laid onto a GPU: tiles, warps, pipeline stages, split-KV, the kernel style
whose calibrated numbers apply, and the multi-pass policy. Plain data: a kernel's config becomes
one of these (autotune.predict), a user gives one as a dict or YAML (docs/simulator.md § GPU
cost model, "Mapping")."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from einsim.errors import ConfigError
from einsim.simulator.gpu_cost.styles import DEFAULT_STYLE, STYLE_NAMES, Tiles, style
from einsim.targets.loader import read_yaml_file

# style names of the two-model era, refused with the name that replaced them
RENAMED_STYLES = {"hopper": "cudnn", "ampere": "fa2", "triton": "flex (or einsim for einsim's kernels)"}
DQ_MODES = ("separate", "one_launch", "atomic")


@dataclass(frozen=True)
class GpuMapping:
    """A kernel mapping; None fields take the kernel style's own choice for the head dim."""

    kernel_style: str | None = None  # None: the target family's default (styles.DEFAULT_STYLE)
    block_m: int | None = None  # query rows per program
    block_n: int | None = None  # keys per K/V tile
    num_warps: int | None = None
    num_stages: int | None = None  # K/V tiles in flight (num_stages - 1 prefetched)
    ctas_per_sm: int | None = None  # programs per SM; None: what shared memory, registers, threads allow
    kv_splits: int | None = None  # split-KV (flash-decoding); None: chosen to fill the SMs
    smem_bytes: int | None = None  # the kernel's own shared memory per program (else the model's)
    registers: int | None = None  # the compiled kernel's registers per thread (else the model's)
    softmax_overlap: float | None = None  # override of the style's fitted overlap
    matmul_efficiency: float | None = None  # override of the style's fitted MMA efficiency
    multipass: str = "recompute"  # multi-pass cascades: "recompute" QK per pass or "materialize" it
    intermediate_bytes: int = 4  # bytes per element of intermediates that cross passes (fp32)
    roofs: str = "measured"  # "measured" | "datasheet"
    search: bool = False  # search tiles, warps and stages for the fastest that fits (also done when the
    # style's own tiles cannot run on the target and the mapping fixes none)
    # the backward (direction="backward"): dK/dV and dQ tiles, how dQ is accumulated
    dkdv_block_m: int | None = None
    dkdv_block_n: int | None = None
    dq_block_m: int | None = None
    dq_block_n: int | None = None
    dq: str | None = None  # "separate" | "one_launch" | "atomic"
    # a mask that reads data (packed documents, a block mask): einsim's compiled kernels build its
    # block mask on every call ("per_call", their default) or are given one built once ("prebuilt":
    # CompiledAttention.block_mask, as FlexAttention's BlockMask)
    block_mask: str = "per_call"
    # linear attention's chunk walks (gpu_cost/linear.py; block_n is the chunk): state columns per
    # program (BLOCK_C), tokens per segment (SEGMENT, 0: one walk), whether the backward reuses
    # the forward's segment starts
    state_columns: int | None = None
    segment: int | None = None
    store_states: bool | None = None

    def __post_init__(self) -> None:
        if self.kernel_style in RENAMED_STYLES:
            raise ConfigError(f"GPU mapping kernel_style {self.kernel_style!r} is now called "
                              f"{RENAMED_STYLES[self.kernel_style]!r}; known styles: {', '.join(STYLE_NAMES)}")
        if self.kernel_style is not None and self.kernel_style not in STYLE_NAMES:
            raise ConfigError(f"GPU mapping kernel_style must be one of {', '.join(STYLE_NAMES)}, got {self.kernel_style!r}")
        for name in ("block_m", "block_n", "num_warps", "num_stages", "ctas_per_sm", "kv_splits", "smem_bytes",
                     "registers", "dkdv_block_m", "dkdv_block_n", "dq_block_m", "dq_block_n"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"GPU mapping {name} must be a positive integer, got {value!r}")
        if self.state_columns is not None and (isinstance(self.state_columns, bool)
                                               or not isinstance(self.state_columns, int) or self.state_columns <= 0):
            raise ConfigError(f"GPU mapping state_columns must be a positive integer, got {self.state_columns!r}")
        if self.segment is not None and (isinstance(self.segment, bool) or not isinstance(self.segment, int)
                                         or self.segment < 0):
            raise ConfigError(f"GPU mapping segment must be 0 (one walk) or a positive number of tokens, "
                              f"got {self.segment!r}")
        if self.store_states is not None and not isinstance(self.store_states, bool):
            raise ConfigError(f"GPU mapping store_states must be true or false, got {self.store_states!r}")
        if isinstance(self.intermediate_bytes, bool) or not isinstance(self.intermediate_bytes, int) or self.intermediate_bytes <= 0:
            raise ConfigError(f"GPU mapping intermediate_bytes must be a positive integer, got {self.intermediate_bytes!r}")
        if self.multipass not in ("recompute", "materialize"):
            raise ConfigError(f"GPU mapping multipass must be 'recompute' or 'materialize', got {self.multipass!r}")
        if self.roofs not in ("measured", "datasheet"):
            raise ConfigError(f"GPU mapping roofs must be 'measured' or 'datasheet', got {self.roofs!r}")
        if not isinstance(self.search, bool):
            raise ConfigError(f"GPU mapping search must be true or false, got {self.search!r}")
        if self.block_mask not in ("per_call", "prebuilt"):
            raise ConfigError(f"GPU mapping block_mask must be 'per_call' or 'prebuilt', got {self.block_mask!r}")
        if self.dq is not None and self.dq not in DQ_MODES:
            raise ConfigError(f"GPU mapping dq must be one of {', '.join(DQ_MODES)}, got {self.dq!r}")
        for name in ("softmax_overlap", "matmul_efficiency"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value <= 1.0):
                raise ConfigError(f"GPU mapping {name} must be in [0, 1], got {value!r}")

    def forward_tiles(self, head_dim: int, decode: bool = False) -> Tiles:
        """The forward's tiles: the mapping's fields, the style's (its decode tiles when a program
        holds only a few query rows) for what it leaves open."""
        own = style(self.kernel_style).tiles(head_dim, "decode" if decode else "forward")
        return Tiles(own.max_head_dim, self.block_m or own.block_m, self.block_n or own.block_n,
                     self.num_warps or own.num_warps, self.num_stages or own.num_stages)

    def backward_tiles(self, head_dim: int) -> tuple[Tiles, Tiles]:
        """(dK/dV tiles, dQ tiles) of the backward."""
        kernel = style(self.kernel_style)
        dkdv, dq = kernel.tiles(head_dim, "dkdv"), kernel.tiles(head_dim, "dq")
        warps, stages = self.num_warps, self.num_stages
        return (Tiles(dkdv.max_head_dim, self.dkdv_block_m or dkdv.block_m, self.dkdv_block_n or dkdv.block_n,
                      warps or dkdv.num_warps, stages or dkdv.num_stages),
                Tiles(dq.max_head_dim, self.dq_block_m or dq.block_m, self.dq_block_n or dq.block_n,
                      warps or dq.num_warps, stages or dq.num_stages))

    def dq_mode(self) -> str:
        return self.dq or style(self.kernel_style).dq

    def for_target(self, architecture: str | None) -> "GpuMapping":
        """The mapping with its kernel style resolved for a GPU family: the family's default
        when it names none; a style the family cannot run is a ConfigError naming one it can."""
        family = architecture or "hopper"
        name = self.kernel_style or DEFAULT_STYLE[family]
        if family not in style(name).architectures:
            runs = [n for n in STYLE_NAMES if family in style(n).architectures]
            raise ConfigError(f"GPU mapping kernel_style {name!r} is a {'/'.join(style(name).architectures)} kernel; "
                              f"on {family} use one of {', '.join(runs)}")
        return replace(self, kernel_style=name)


def gpu_mapping(mapping: Any = None) -> GpuMapping:
    """A GpuMapping from None, a GpuMapping, a dict, a YAML path, or a general simulator Mapping
    (its `gpu` section when it has one; its key_tile/query_tile become block_n/block_m)."""
    if mapping is None:
        return GpuMapping()
    if isinstance(mapping, GpuMapping):
        return mapping
    if isinstance(mapping, (str, Path)):
        shown = str(mapping)
        try:
            return _gpu_mapping(_read_mapping_file(mapping))
        except ConfigError as error:  # name the file the bad field is in
            message = str(error)
            raise ConfigError(message if message.startswith(shown) else f"{shown}: {message}") from None
    return _gpu_mapping(mapping)


def _gpu_mapping(mapping: Any) -> GpuMapping:
    from einsim.simulator.mapping import Mapping as GeneralMapping

    source = getattr(mapping, "gpu", None)
    if source is None and isinstance(mapping, Mapping):
        source = mapping.get("gpu", mapping)
    if source is None:
        source = mapping
    known = {f.name for f in fields(GpuMapping)}
    general = {f.name for f in fields(GeneralMapping)}
    if isinstance(source, Mapping):
        values = {k: v for k, v in source.items() if k in known}
        unknown = sorted(set(source) - known - general - {"gpu"})
        if unknown:
            raise ConfigError(f"GPU mapping: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        getter = source.get
    else:
        values = {k: getattr(source, k) for k in known if getattr(source, k, None) is not None}
        getter = lambda name: getattr(source, name, None)  # noqa: E731
    # the simulator's general Mapping names the same tiles by rank: key_tile = M0, query_tile = P0
    for general_name, ours in (("key_tile", "block_n"), ("query_tile", "block_m")):
        if ours not in values and getter(general_name) is not None:
            values[ours] = getter(general_name)
    return GpuMapping(**values)


def _read_mapping_file(path: str | Path) -> dict:
    document = read_yaml_file(path, str(path), error_type=ConfigError)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(document).__name__}")
    return document
