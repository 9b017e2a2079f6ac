"""The GPU half of the analytical model: a FlashAttention-style mapping of a cascade onto SMs
(query tiles x batch x heads as CTAs, K/V tiles streamed through shared memory), its traffic per
memory level, its compute per unit, and latency/energy. Every formula: docs/simulator.md § GPU targets.

`gpu_roofs(target, dtype)` is the small public summary of a GPU's ceilings that the autotuner's
kernel model and the roofline plots reuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from einsim.errors import ConfigError, SpecError
from einsim.simulator.estimate import EinsumEstimate, Estimate
from einsim.problem import Problem
from einsim.simulator.simulate import window_binding
from einsim.targets.loader import read_yaml_file

# --- the ceilings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuRoofs:
    """A GPU's ceilings for one dtype (docs/simulator.md § GPU targets, "Roofs")."""

    target: str
    dtype: str
    matmul_flops: float  # FLOP/s on the tensor cores (2 FLOP per MAC)
    matmul_source: str  # "measured" | "datasheet" | "derived"
    exp_per_s: float  # SFU exponentials per second (MUFU.EX2)
    vector_ops_per_s: float  # FP32 lane operations per second (CUDA cores)
    hbm_bytes_per_s: float
    hbm_source: str  # "measured" | "datasheet"
    l2_bytes_per_s: float
    l2_bytes: float
    smem_bytes_per_sm: float
    registers_bytes_per_sm: float
    sm_count: int
    clock_hz: float
    launch_overhead_s: float

    @property
    def matmul_macs_per_s(self) -> float:
        return self.matmul_flops / 2.0

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity (FLOP per HBM byte) where the matmul roof meets the HBM roof."""
        return self.matmul_flops / self.hbm_bytes_per_s


def gpu_roofs(target: Any, dtype: str | None = None, source: str = "measured") -> GpuRoofs:
    """Ceilings of a GPU target: `source="measured"` uses the preset's measured (attainable)
    figures where it has them and the datasheet elsewhere; `"datasheet"` never uses measurements."""
    target = _as_target(target)
    if target.kind != "gpu":
        raise SpecError(f"{target.source_path or target.name}: kind: expected 'gpu' for the GPU model, got {target.kind!r}")
    dtype = dtype or target.default_dtype
    macs, matmul_source = target.peak_ops_per_s(target.unit("matrix"), dtype, source)
    exps, _ = target.peak_ops_per_s(target.unit("exp"), dtype, "derived")
    vector, _ = target.peak_ops_per_s(target.unit("vector"), dtype, source)
    levels = _gpu_levels(target)
    hbm = levels["hbm"]
    hbm_source = "measured" if source == "measured" and hbm.measured_bandwidth_bytes_per_s else "datasheet"
    return GpuRoofs(
        target=target.name,
        dtype=dtype,
        matmul_flops=2.0 * macs,
        matmul_source=matmul_source,
        exp_per_s=exps,
        vector_ops_per_s=vector,
        hbm_bytes_per_s=hbm.bandwidth(source),
        hbm_source=hbm_source,
        l2_bytes_per_s=levels["l2"].bandwidth(source),
        l2_bytes=levels["l2"].total_capacity_bytes,
        smem_bytes_per_sm=levels["shared_memory"].capacity_bytes,
        registers_bytes_per_sm=levels["registers"].capacity_bytes,
        sm_count=target.parallel_units,
        clock_hz=target.clock_hz,
        launch_overhead_s=target.launch_overhead_s,
    )


def _gpu_levels(target: Any) -> dict[str, Any]:
    """registers / shared_memory / l2 / hbm by name, else by position (innermost first)."""
    levels = list(target.memory_levels)
    by_name = {level.name: level for level in levels}
    found = {}
    for role, position in (("registers", 0), ("shared_memory", -3), ("l2", -2), ("hbm", -1)):
        if role in by_name:
            found[role] = by_name[role]
        elif len(levels) >= 4 or role in ("l2", "hbm"):
            found[role] = levels[position]
        else:
            found[role] = levels[0]
    return found


# --- the mapping ------------------------------------------------------------------------------

KERNEL_STYLES = {
    # Hopper-native kernels (cuDNN, FlashAttention-3): wgmma with ping-pong warpgroups, so part of
    # each tile's softmax hides under the other warpgroup's matmuls. The overlap was calibrated on
    # one anchor (docs/simulator.md § GPU targets, "Calibration").
    "hopper": {"softmax_overlap": 0.5, "matmul_efficiency": 1.0},
    # Triton kernels on Hopper (FlexAttention, einsim's kernels): wgmma, but one warpgroup runs the
    # matmul and then the softmax of a tile, so nothing hides: no free parameter.
    "triton": {"softmax_overlap": 0.0, "matmul_efficiency": 1.0},
    # Ampere-style kernels on Hopper (FlashAttention-2, PyTorch's sdpa flash backend): mma.sync
    # reaches only part of the wgmma roof and the softmax waits for the matmul.
    "ampere": {"softmax_overlap": 0.0, "matmul_efficiency": 0.6},
}


@dataclass(frozen=True)
class GpuMapping:
    """How the cascade is laid onto the GPU (docs/simulator.md § GPU targets, "Mapping")."""

    block_m: int = 128  # query rows per CTA
    block_n: int = 128  # keys per K/V tile (binds the cascade's M0)
    ctas_per_sm: int = 1
    num_stages: int = 2  # K/V tiles in flight; >= 2 overlaps loads with compute
    kv_splits: int | None = None  # split-KV (flash-decoding); None: chosen to fill the SMs
    kernel_style: str = "hopper"
    softmax_overlap: float | None = None  # fraction of the shorter of matmul/softmax hidden
    matmul_efficiency: float | None = None  # fraction of the matmul roof the MMA instructions reach
    multipass: str = "recompute"  # multi-pass cascades: "recompute" QK per pass or "materialize" it
    intermediate_bytes: int = 4  # bytes per element of intermediates that cross passes through HBM (fp32 statistics/scores)
    roofs: str = "measured"  # "measured" | "datasheet"

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "ctas_per_sm", "num_stages", "intermediate_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"GPU mapping {name} must be a positive integer, got {value!r}")
        if self.kv_splits is not None and (not isinstance(self.kv_splits, int) or self.kv_splits <= 0):
            raise ConfigError(f"GPU mapping kv_splits must be a positive integer, got {self.kv_splits!r}")
        if self.kernel_style not in KERNEL_STYLES:
            raise ConfigError(f"GPU mapping kernel_style must be one of {', '.join(KERNEL_STYLES)}, got {self.kernel_style!r}")
        if self.multipass not in ("recompute", "materialize"):
            raise ConfigError(f"GPU mapping multipass must be 'recompute' or 'materialize', got {self.multipass!r}")
        if self.roofs not in ("measured", "datasheet"):
            raise ConfigError(f"GPU mapping roofs must be 'measured' or 'datasheet', got {self.roofs!r}")
        for name in ("softmax_overlap", "matmul_efficiency"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value <= 1.0):
                raise ConfigError(f"GPU mapping {name} must be in [0, 1], got {value!r}")

    @property
    def overlap(self) -> float:
        return KERNEL_STYLES[self.kernel_style]["softmax_overlap"] if self.softmax_overlap is None else self.softmax_overlap

    @property
    def efficiency(self) -> float:
        return KERNEL_STYLES[self.kernel_style]["matmul_efficiency"] if self.matmul_efficiency is None else self.matmul_efficiency


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
    source = getattr(mapping, "gpu", None)
    if source is None and isinstance(mapping, Mapping):
        source = mapping.get("gpu", mapping)
    if source is None:
        source = mapping
    known = {f.name for f in fields(GpuMapping)}
    general = _general_mapping_fields()
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


def _general_mapping_fields() -> set[str]:
    """Field names of the spatial/general Mapping, accepted (and ignored) in a GPU mapping."""
    try:
        from einsim.simulator.mapping import Mapping as GeneralMapping

        return {f.name for f in fields(GeneralMapping)}
    except (ImportError, TypeError):
        return {"key_tile", "query_tile"}


def _read_mapping_file(path: str | Path) -> dict:
    document = read_yaml_file(path, str(path), error_type=ConfigError)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(document).__name__}")
    return document


# --- masks at tile granularity ---------------------------------------------------------------


@dataclass(frozen=True)
class TileVisit:
    """Which (query-tile, key-tile) pairs a mask leaves work in, per query tile."""

    tiles_per_row_tile: np.ndarray  # visited K/V tiles for each query tile
    partial_tiles: int  # visited tiles that the mask cuts (need masking ops), summed over query tiles
    visited_area: float  # sum over query tiles of rows x visited tiles x block_n (score elements computed)
    exact_pairs: float  # (query, key) pairs the mask keeps (the cascade's filtered count)
    kv_visited_fraction: float  # fraction of K/V positions some query reads
    row_tile_pairs: float = 0.0  # sum over query tiles of rows x visited tiles ((row, key tile) pairs)
    row_key_pairs: float = 0.0  # sum over query tiles of rows x keys from the first visited tile's start to the last visible key


def tile_visits(q_len: int, kv_len: int, rows_per_tile: int, block_n: int, causal: bool, window: tuple[int, int] | None) -> TileVisit:
    """Bottom-right aligned masks (einsim.einsum_cascades.reference): query i sees keys j with
    i + (M - P) - left <= j <= i + (M - P) + right; causal sets right = 0 (docs § "Masks")."""
    offset = kv_len - q_len
    left = right = math.inf
    if causal:
        right = 0
    if window is not None:
        left = min(left, window[0])
        right = min(right, window[1])
    kv_tiles = math.ceil(kv_len / block_n)
    q_tiles = math.ceil(q_len / rows_per_tile)
    starts = np.arange(q_tiles, dtype=np.int64) * rows_per_tile
    ends = np.minimum(starts + rows_per_tile, q_len) - 1
    rows = (ends - starts + 1).astype(np.float64)
    lo = np.maximum(0, starts + offset - left) if left != math.inf else np.zeros(q_tiles, dtype=np.int64)
    hi = np.minimum(kv_len - 1, ends + offset + right) if right != math.inf else np.full(q_tiles, kv_len - 1, dtype=np.int64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    empty = hi < lo
    first = np.floor(lo / block_n)
    last = np.floor(hi / block_n)
    tiles = np.where(empty, 0, last - first + 1)
    # a visited tile is cut by the mask unless every query of the row tile sees all its keys
    full_lo = np.maximum(0, ends + offset - left) if left != math.inf else np.zeros(q_tiles)
    full_hi = np.minimum(kv_len - 1, starts + offset + right) if right != math.inf else np.full(q_tiles, kv_len - 1)
    full_first = np.ceil(np.asarray(full_lo, dtype=np.float64) / block_n)
    full_last_end = np.floor((np.asarray(full_hi, dtype=np.float64) + 1) / block_n) - 1
    full_last_end = np.where(np.asarray(full_hi) >= kv_len - 1, kv_tiles - 1, full_last_end)
    full = np.clip(full_last_end - full_first + 1, 0, None)
    full = np.minimum(full, tiles)
    partial = int(np.sum(tiles - full))
    # exact kept pairs, per query
    i = np.arange(q_len, dtype=np.float64)
    q_lo = np.maximum(0, i + offset - left) if left != math.inf else np.zeros(q_len)
    q_hi = np.minimum(kv_len - 1, i + offset + right) if right != math.inf else np.full(q_len, kv_len - 1)
    exact = float(np.sum(np.clip(q_hi - q_lo + 1, 0, None)))
    seen_lo = float(np.min(np.where(empty, np.inf, lo))) if not empty.all() else 0.0
    seen_hi = float(np.max(np.where(empty, -np.inf, hi))) if not empty.all() else -1.0
    kv_fraction = max(0.0, min(kv_tiles, math.floor(seen_hi / block_n) - math.floor(seen_lo / block_n) + 1) * block_n) / (kv_tiles * block_n) if seen_hi >= seen_lo else 0.0
    return TileVisit(
        tiles_per_row_tile=tiles.astype(np.int64),
        partial_tiles=partial,
        visited_area=float(np.sum(rows * tiles * block_n)),
        row_tile_pairs=float(np.sum(rows * tiles)),
        row_key_pairs=float(np.sum(np.where(empty, 0.0, rows * (hi + 1 - first * block_n)))),
        exact_pairs=exact,
        kv_visited_fraction=kv_fraction,
    )


# --- the model ----------------------------------------------------------------------------------

# GPU instructions the cascade does not spell out (docs § "Per-Einsum compute"):
CONVERT_OPS_PER_ELEMENT = 0.5  # an fp32 intermediate fed to the tensor cores is packed to bf16 (2 per op)
MASK_OPS_PER_ELEMENT = 2.0  # compare + select on tiles the mask cuts
DIV_SFU_OPS = 1.0  # a division is MUFU.RCP + one FMUL
SPLIT_PARTIAL_BYTES = 4  # split-KV partial outputs and statistics are fp32
DECODE_MIN_MMA_ROWS = 16  # mma tiles are at least 16 rows: fewer rows are padded (decode)
PER_SM_BANDWIDTH_SHARE = 2.0
BASIC_OPS = ("mul", "add", "sub", "max", "min", "div", "exp")
SPECIAL_FUNCTION_VECTOR_OPS = 4.0  # other transcendental functions: an SFU op plus ~4 FP32 ops  # one SM can draw up to 2x its fair share of HBM bandwidth


def simulate_gpu(cascade: Any, problem: Problem, target: Any, mapping: Any = None) -> Estimate:
    """The Estimate of `cascade` for `workload` on a GPU target (docs/simulator.md § GPU targets)."""
    cascade = _as_cascade(cascade)
    target = _as_target(target)
    plan = gpu_mapping(mapping)
    roofs = gpu_roofs(target, problem.dtype, plan.roofs)
    levels = _gpu_levels(target)
    notes: list[str] = []
    if not _is_attention(cascade):
        return _simulate_unfused(cascade, problem, target, plan, roofs, levels)
    causal, window = _cascade_mask(cascade, problem)

    from einsim.einsum_cascades.passes import analyze_passes

    report = analyze_passes(cascade, rank="M")
    family_m = _family(cascade, "M")
    family_p = _family(cascade, "P")

    B, H, G = problem.batch, problem.q_heads, problem.kv_heads
    P, M, E, F = problem.q_len, problem.kv_len, problem.head_dim, problem.v_head_dim
    word = problem.dtype_bytes
    group = problem.group_size
    bn = min(plan.block_n, _pow2_at_least(M))

    # CTAs: prefill tiles the queries of each (b, h); decode-like shapes (fewer queries than a
    # tile) pack the group's query heads into one CTA per (b, kv head) and split K/V (§ "Mapping").
    packed = P < plan.block_m and group > 1
    if packed:
        q_per_tile = min(P, max(1, plan.block_m // group))
        rows_per_cta = q_per_tile * group
        heads_of_ctas = G
    else:
        q_per_tile = min(plan.block_m, P)
        rows_per_cta = q_per_tile
        heads_of_ctas = H
    row_tiles = math.ceil(P / q_per_tile)
    visit = tile_visits(P, M, q_per_tile, bn, causal, window)
    base_ctas = B * heads_of_ctas * row_tiles
    kv_tiles_max = int(visit.tiles_per_row_tile.max()) if visit.tiles_per_row_tile.size else 0
    splits = plan.kv_splits
    if splits is None:
        splits = 1
        if row_tiles == 1 and base_ctas < 2 * roofs.sm_count and kv_tiles_max > 1:  # decode-like only
            splits = min(kv_tiles_max, math.ceil(2 * roofs.sm_count / base_ctas))
    splits = max(1, min(splits, max(1, kv_tiles_max)))
    ctas = base_ctas * splits

    # fraction of the unmasked (m, p) work the GPU computes: whole visited tiles (§ "Masks")
    full_area = float(P) * M
    tile_fraction = visit.visited_area / full_area if full_area else 0.0
    exact_fraction = visit.exact_pairs / full_area if full_area else 0.0
    if visit.exact_pairs == 0:
        notes.append("the mask leaves no (query, key) pair: only the launch is paid")

    sizes = _bind(cascade, problem, bn, splits, window)
    recompute: dict[int, list[str]] = {}
    growing = [t for t in report.live_across_passes if t.grows_with_rank and t.produced_in > 0]
    if report.passes > 1:
        if plan.multipass == "recompute":
            recompute = _recompute_plan(cascade, report, family_m)
            notes.append(f"{report.passes}-pass cascade mapped with recompute: each pass is its own launch; row statistics "
                         f"go through HBM and later passes re-read Q/K/V to recompute {', '.join(sorted({t.tensor for t in growing}))}")
        else:
            notes.append(f"{report.passes}-pass cascade mapped with materialize: "
                         f"{', '.join(t.tensor for t in growing)} go through HBM between passes")

    # --- per-Einsum compute (§ "Per-Einsum compute") ---------------------------------------------
    per_einsum_ops: dict[str, dict[str, float]] = {}
    units: dict[str, str] = {}
    tensor_macs = exps = vector_ops = 0.0
    intermediate = set(t for t in cascade.tensors if t not in cascade.inputs)
    skipped = _skipped_native(cascade, report, recompute)
    run_count = {e.output: 0 if e.output in skipped else 1 for e in cascade.einsums}
    for names in recompute.values():
        for name in names:
            run_count[name] += 1
    for einsum in cascade.einsums:
        counts = einsum.operation_counts(sizes)
        ranks = set(einsum.iteration_ranks)
        scale = 1.0
        if ranks & family_m and ranks & family_p:
            masked_already = any(set(f.ranks) & (family_m | family_p) for f in einsum.filters)
            scale = tile_fraction / exact_fraction if masked_already and exact_fraction else tile_fraction
        scale *= run_count[einsum.output]
        ops: dict[str, float] = {}
        if _is_matmul(einsum):
            unit = "tensor_core"
            macs = counts.get("mul", 0) * scale
            pad = 1.0
            if packed or rows_per_cta < DECODE_MIN_MMA_ROWS:
                pad = max(rows_per_cta, DECODE_MIN_MMA_ROWS) / rows_per_cta
            ops["mac"] = macs * pad
            tensor_macs += ops["mac"]
            converted = [t for t in einsum.operand_tensors if t in intermediate]
            if converted:
                ops["convert"] = macs / _contracted(einsum, sizes) * CONVERT_OPS_PER_ELEMENT
                vector_ops += ops["convert"]
        else:
            unit = "cuda_core"
            for kind, count in counts.items():
                count *= scale
                if kind == "exp":
                    ops["exp"] = ops.get("exp", 0.0) + count
                    exps += count
                    unit = "sfu"
                elif kind == "div":
                    ops["div"] = ops.get("div", 0.0) + count
                    exps += count * DIV_SFU_OPS
                    vector_ops += count
                elif kind not in BASIC_OPS:  # gelu, elu1, tanh, ...: one SFU op and a few lane ops
                    ops[kind] = ops.get(kind, 0.0) + count
                    exps += count
                    vector_ops += count * SPECIAL_FUNCTION_VECTOR_OPS
                    unit = "sfu"
                else:
                    ops[kind] = ops.get(kind, 0.0) + count
                    vector_ops += count
        per_einsum_ops[einsum.output] = ops
        units[einsum.output] = unit
    mask_ops = visit.partial_tiles * rows_per_cta * bn * MASK_OPS_PER_ELEMENT * B * heads_of_ctas * report.passes
    if mask_ops:
        vector_ops += mask_ops

    # --- traffic (§ "Traffic") -----------------------------------------------------------------
    # inputs along M (K, V) are streamed, and with GQA read per K/V head; inputs along P (Q) are
    # staged once per CTA; anything else (weights) is read once per pass that needs it
    streamed, staged = {}, {}
    per_key_bytes: dict[str, float] = {}
    for name, ranks in cascade.inputs.items():
        elements = float(cascade.tensor_elements(name, sizes))
        ranks_set = set(ranks)
        if ranks_set & family_m and not ranks_set & family_p:
            share = G / H if "H" in ranks_set and "G" not in ranks_set and G < H else 1.0
            streamed[name] = elements * word * share * visit.kv_visited_fraction
            heads_in_tensor = G if "G" in ranks_set else (H if "H" in ranks_set else 1)
            per_key_bytes[name] = elements * word / (B * heads_in_tensor * M)
        else:
            staged[name] = elements * word
    o_bytes = sum(float(cascade.tensor_elements(name, sizes)) * word for name in cascade.outputs)
    reads_per_pass = _inputs_per_pass(cascade, report, recompute, skipped)
    last_pass = report.passes
    pass_reads: dict[int, dict[str, float]] = {k: {} for k in range(1, last_pass + 1)}
    pass_writes: dict[int, dict[str, float]] = {k: {} for k in range(1, last_pass + 1)}
    attributed: dict[str, float] = {e.output: 0.0 for e in cascade.einsums}
    # every pass is its own launch: it reads each input its Einsums (reruns included) need,
    # Q as well as K/V; nothing stays on chip from one pass to the next (§ "Multi-pass")
    for pass_index, names in sorted(reads_per_pass.items()):
        for tensor, reader in names.items():
            amount = streamed.get(tensor, staged.get(tensor, 0.0))
            pass_reads[pass_index][tensor] = amount
            attributed[reader] += amount
    producers = {e.output for e in cascade.einsums}
    for name in cascade.outputs:
        amount = float(cascade.tensor_elements(name, sizes)) * word
        pass_writes[report.einsum_pass.get(name, last_pass)][name] = amount
        if name in producers:
            attributed[name] += amount
    # intermediates a later pass reads but does not recompute: written once by their pass at the
    # mapping's intermediate precision, read by each later pass; only visited tiles of those
    # that grow with M
    ibytes = plan.intermediate_bytes
    crossing_bytes = 0.0
    for tensor, (made_in, read_in) in _crossing_intermediates(cascade, report, recompute, skipped).items():
        amount = float(cascade.tensor_elements(tensor, sizes)) * ibytes * _visited_share(
            cascade.tensors[tensor], cascade.tensor_shape(tensor, sizes), family_m, family_p, visit)
        pass_writes[made_in][tensor] = amount
        for k in read_in:
            pass_reads[k][tensor] = amount
        attributed[tensor] += amount * (1 + len(read_in))
        crossing_bytes += amount * (1 + len(read_in))
    hbm_read = sum(sum(r.values()) for r in pass_reads.values())
    hbm_write = sum(sum(w.values()) for w in pass_writes.values())
    split_bytes = 0.0
    if splits > 1:
        split_bytes = 2.0 * B * H * P * (F + 2) * SPLIT_PARTIAL_BYTES * splits  # write + read back
        hbm_read += split_bytes / 2
        hbm_write += split_bytes / 2
        attributed[cascade.einsums[-1].output] += split_bytes
        notes.append(f"split-KV over {splits} CTAs per row tile; partial outputs combine through HBM ({split_bytes / 1e6:.3g} MB)")
    hbm_bytes = hbm_read + hbm_write
    # every CTA reads its visited K/V tiles through L2 (and Q once, O written once)
    tiles_total = float(np.sum(visit.tiles_per_row_tile)) * B * heads_of_ctas
    l2_kv = 0.0
    for pass_index, names in reads_per_pass.items():
        for tensor in names:
            if tensor in per_key_bytes:
                l2_kv += tiles_total * bn * per_key_bytes[tensor]
    q_staged = sum(amount for reads in pass_reads.values() for name, amount in reads.items() if name in staged)
    l2_bytes = l2_kv + q_staged + o_bytes + split_bytes + crossing_bytes
    smem_bytes = 2.0 * l2_kv + q_staged  # K/V tiles written once, read once by the MMAs; Q staged once per pass

    # --- time (§ "Latency") --------------------------------------------------------------------
    sms = roofs.sm_count
    tc_rate = roofs.matmul_macs_per_s * plan.efficiency / sms  # per SM
    sfu_rate = roofs.exp_per_s / sms
    vec_rate = roofs.vector_ops_per_s / sms
    t_tc = tensor_macs / tc_rate  # SM-seconds
    t_sfu = exps / sfu_rate
    t_vec = vector_ops / vec_rate
    t_softmax = t_sfu + t_vec
    overlap = plan.overlap
    work = max(t_tc, t_softmax) + (1.0 - overlap) * min(t_tc, t_softmax)  # SM-seconds
    tiles_per_cta = visit.tiles_per_row_tile.astype(np.float64) / splits
    cta_tiles_total = float(np.sum(tiles_per_cta)) * B * heads_of_ctas * splits
    per_tile = work / cta_tiles_total if cta_tiles_total else 0.0
    slots = sms * plan.ctas_per_sm
    uniform = bool(visit.tiles_per_row_tile.size) and visit.tiles_per_row_tile.min() == visit.tiles_per_row_tile.max()
    longest = float(tiles_per_cta.max()) * per_tile if tiles_per_cta.size else 0.0
    if ctas == 0 or per_tile == 0:
        t_compute = 0.0
    elif uniform:
        waves = math.ceil(ctas / slots)
        t_compute = waves * longest * plan.ctas_per_sm if ctas >= slots else longest
        if ctas < slots:
            notes.append(f"only {ctas} CTAs for {sms} SMs: {100 * ctas / slots:.0f}% of the GPU is busy")
    else:
        t_compute = max(work / sms, longest) + 0.5 * longest
    active = min(ctas, sms)
    hbm_rate = min(roofs.hbm_bytes_per_s, active * PER_SM_BANDWIDTH_SHARE * roofs.hbm_bytes_per_s / sms) if active else roofs.hbm_bytes_per_s
    t_hbm = hbm_bytes / hbm_rate
    t_l2 = l2_bytes / roofs.l2_bytes_per_s
    if plan.num_stages >= 2:
        t_body = max(t_compute, t_hbm, t_l2)
    else:
        t_body = t_compute + max(t_hbm, t_l2)
        notes.append("num_stages = 1: loads do not overlap compute")
    latency = roofs.launch_overhead_s * report.passes + t_body  # one launch per pass

    terms = {"tensor_core": t_tc / sms, "sfu": t_sfu / sms, "cuda_core": t_vec / sms, "hbm": t_hbm, "l2": t_l2}
    if t_body <= roofs.launch_overhead_s:
        bound = "launch"
    elif t_body == t_compute:
        bound = "tensor_core" if t_tc >= t_softmax else ("sfu" if t_sfu >= t_vec else "cuda_core")
    else:
        bound = "hbm" if t_hbm >= t_l2 else "l2"
    utilization = {name: (value / latency if latency else 0.0) for name, value in terms.items()}

    # --- buffer (§ "Buffer") -------------------------------------------------------------------
    smem_need = (rows_per_cta * E + plan.num_stages * bn * (E + F)) * word * plan.ctas_per_sm
    register_need = (rows_per_cta * F * 4 + rows_per_cta * bn * 4 + rows_per_cta * 2 * 4) * plan.ctas_per_sm
    smem_capacity = roofs.smem_bytes_per_sm
    fits = smem_need <= smem_capacity and register_need <= roofs.registers_bytes_per_sm
    if not fits:
        notes.append(f"does not fit: needs {smem_need / 1024:.0f} KiB shared memory (has {smem_capacity / 1024:.0f}) and "
                     f"{register_need / 1024:.0f} KiB registers (has {roofs.registers_bytes_per_sm / 1024:.0f}) per SM")

    # --- energy (§ "Energy") -------------------------------------------------------------------
    dtype = roofs.dtype
    e_tc = target.energy_per_op(target.unit("matrix"), dtype, "mac")
    e_vec = target.energy_per_op(target.unit("vector"), dtype)
    e_sfu = target.energy_per_op(target.unit("exp"), dtype, "exp")
    hbm, l2, smem = levels["hbm"], levels["l2"], levels["shared_memory"]
    energy_by_component = {
        "tensor_core": tensor_macs * e_tc,
        "cuda_core": vector_ops * e_vec,
        "sfu": exps * e_sfu,
        "hbm": hbm_read * hbm.read_energy_j_per_byte + hbm_write * hbm.write_energy_j_per_byte,
        "l2": l2_bytes * l2.read_energy_j_per_byte,
        "shared_memory": smem_bytes * 0.5 * (smem.read_energy_j_per_byte + smem.write_energy_j_per_byte),
    }
    energy = sum(energy_by_component.values())

    # --- per Einsum ----------------------------------------------------------------------------
    rates = {"tensor_core": tc_rate * sms, "sfu": sfu_rate * sms, "cuda_core": vec_rate * sms}
    rows = []
    for einsum in cascade.einsums:
        ops = per_einsum_ops[einsum.output]
        unit = units[einsum.output]
        if unit == "tensor_core":
            busy = ops.get("mac", 0.0) / rates["tensor_core"]
            op_energy = ops.get("mac", 0.0) * e_tc + ops.get("convert", 0.0) * e_vec
        else:
            n_exp = ops.get("exp", 0.0) + ops.get("div", 0.0) * DIV_SFU_OPS
            n_vec = sum(v for k, v in ops.items() if k != "exp")
            busy = n_exp / rates["sfu"] + n_vec / rates["cuda_core"]
            op_energy = n_exp * e_sfu + n_vec * e_vec
        traffic = attributed[einsum.output]
        mem_time = traffic / roofs.hbm_bytes_per_s
        rows.append(
            EinsumEstimate(
                einsum=einsum.output,
                pass_index=report.einsum_pass.get(einsum.output, 1),
                unit=unit,
                compute_ops=ops,
                traffic_bytes=traffic,
                buffer_bytes=_einsum_buffer(einsum, rows_per_cta, bn, E, F) * slots,
                latency_s=max(busy, mem_time),
                energy_j=op_energy + traffic * hbm.read_energy_j_per_byte,
            )
        )

    compute_ops = {"mac": tensor_macs, "exp": exps, "vector": vector_ops}
    for ops in per_einsum_ops.values():
        for kind, value in ops.items():
            if kind not in ("mac", "exp"):
                compute_ops[kind] = compute_ops.get(kind, 0.0) + value
    notes.append(
        f"roofs ({plan.roofs}): matmul {roofs.matmul_flops / 1e12:.0f} TFLOP/s ({roofs.matmul_source}) "
        f"x matmul efficiency {plan.efficiency:g}, SFU {roofs.exp_per_s / 1e12:.2f} Texp/s, FP32 {roofs.vector_ops_per_s / 1e12:.1f} Top/s, "
        f"HBM {roofs.hbm_bytes_per_s / 1e12:.2f} TB/s ({roofs.hbm_source}); kernel style {plan.kernel_style}: "
        f"softmax/matmul overlap {overlap:g}"
    )
    notes.append(f"{ctas} CTAs of {rows_per_cta} query rows x {bn}-key tiles on {sms} SMs; bound by {bound}")
    chosen = {
        "kind": "gpu", "block_m": plan.block_m, "block_n": bn, "ctas_per_sm": plan.ctas_per_sm,
        "num_stages": plan.num_stages, "kv_splits": splits, "kernel_style": plan.kernel_style,
        "softmax_overlap": overlap, "matmul_efficiency": plan.efficiency, "multipass": plan.multipass,
        "roofs": plan.roofs, "ctas": ctas, "rows_per_cta": rows_per_cta, "gqa_packed": packed,
        "intermediate_bytes": ibytes,
        # off-chip bytes of each pass by tensor (split-KV partials excluded), for the kernels' pass_traffic
        "hbm_bytes_per_pass": [{"reads": dict(pass_reads[k]), "writes": dict(pass_writes[k])}
                               for k in range(1, last_pass + 1)],
    }
    return _estimate(
        chosen,
        cascade=cascade.name,
        target=target.name,
        problem=problem,
        passes=report.passes,
        buffer_bytes=float(smem_need),
        buffer_capacity_bytes=float(smem_capacity),
        fits=fits,
        traffic_bytes=float(hbm_bytes),
        traffic_by_level={"hbm": float(hbm_bytes), "l2": float(l2_bytes), "shared_memory": float(smem_bytes)},
        compute_ops=compute_ops,
        latency_s=float(latency),
        bound=bound,
        utilization=utilization,
        energy_j=float(energy),
        energy_by_component=energy_by_component,
        per_einsum=tuple(rows),
        notes=tuple(notes),
    )


def _simulate_unfused(cascade: Any, problem: Problem, target: Any, plan: GpuMapping, roofs: GpuRoofs, levels: dict) -> Estimate:
    """Cascades without softmax-attention structure (GEMM, FFN, linear attention): one kernel per
    Einsum, each reading its operands from HBM and writing its output there (§ "Other cascades")."""
    from einsim.einsum_cascades.passes import analyze_passes

    sizes = cascade.bind({rank: size for rank, size in problem.rank_sizes().items() if rank in cascade.ranks})
    passes = analyze_passes(cascade, rank="M").passes if "M" in cascade.ranks else 1
    word = problem.dtype_bytes
    dtype = roofs.dtype
    e_tc = target.energy_per_op(target.unit("matrix"), dtype, "mac")
    e_vec = target.energy_per_op(target.unit("vector"), dtype)
    e_sfu = target.energy_per_op(target.unit("exp"), dtype, "exp")
    hbm = levels["hbm"]
    rows, latency, hbm_total = [], 0.0, 0.0
    totals = {"mac": 0.0, "exp": 0.0, "vector": 0.0}
    busy = {"tensor_core": 0.0, "sfu": 0.0, "cuda_core": 0.0, "hbm": 0.0}
    energy = {"tensor_core": 0.0, "cuda_core": 0.0, "sfu": 0.0, "hbm": 0.0}
    for einsum in cascade.einsums:
        counts = einsum.operation_counts(sizes)
        macs = exps = vec = 0.0
        if _is_matmul(einsum):
            unit, macs = "tensor_core", float(counts.get("mul", 0))
        else:
            unit = "cuda_core"
            for kind, count in counts.items():
                if kind == "exp":
                    exps += count
                    unit = "sfu"
                elif kind == "div":
                    exps += count * DIV_SFU_OPS
                    vec += count
                elif kind not in BASIC_OPS:
                    exps += count
                    vec += count * SPECIAL_FUNCTION_VECTOR_OPS
                    unit = "sfu"
                else:
                    vec += count
        traffic = sum(float(cascade.tensor_elements(t, sizes)) for t in einsum.operand_tensors) * word
        traffic += float(cascade.tensor_elements(einsum.output, sizes)) * word
        t_tc = macs / (roofs.matmul_macs_per_s * plan.efficiency)
        t_soft = exps / roofs.exp_per_s + vec / roofs.vector_ops_per_s
        t_compute = max(t_tc, t_soft) + (1.0 - plan.overlap) * min(t_tc, t_soft)
        t_mem = traffic / roofs.hbm_bytes_per_s
        t = roofs.launch_overhead_s + max(t_compute, t_mem)
        e = macs * e_tc + exps * e_sfu + vec * e_vec + traffic * hbm.read_energy_j_per_byte
        latency += t
        hbm_total += traffic
        totals["mac"] += macs
        totals["exp"] += exps
        totals["vector"] += vec
        busy["tensor_core"] += t_tc
        busy["sfu"] += exps / roofs.exp_per_s
        busy["cuda_core"] += vec / roofs.vector_ops_per_s
        busy["hbm"] += t_mem
        energy["tensor_core"] += macs * e_tc
        energy["sfu"] += exps * e_sfu
        energy["cuda_core"] += vec * e_vec
        energy["hbm"] += traffic * hbm.read_energy_j_per_byte
        ops = {k: float(v) for k, v in counts.items()}
        rows.append(EinsumEstimate(einsum=einsum.output, pass_index=1, unit=unit, compute_ops=ops, traffic_bytes=traffic,
                                   buffer_bytes=0.0, latency_s=t, energy_j=e))
    utilization = {name: value / latency if latency else 0.0 for name, value in busy.items()}
    utilization["l2"] = 0.0
    bound = max(busy, key=busy.get) if max(busy.values()) > 0 else "launch"
    if len(cascade.einsums) * roofs.launch_overhead_s > 0.5 * latency:
        bound = "launch"
    return _estimate(
        {"kind": "gpu-unfused", "kernel_style": plan.kernel_style, "roofs": plan.roofs},
        cascade=cascade.name, target=target.name, problem=problem, passes=passes,
        buffer_bytes=0.0, buffer_capacity_bytes=float(roofs.smem_bytes_per_sm), fits=True,
        traffic_bytes=hbm_total, traffic_by_level={"hbm": hbm_total}, compute_ops=totals,
        latency_s=latency, bound=bound, utilization=utilization, energy_j=sum(energy.values()),
        energy_by_component=energy, per_einsum=tuple(rows),
        notes=(f"{cascade.name} is not softmax attention over M and P: mapped unfused, one kernel per Einsum, "
               f"every operand and result through HBM ({len(cascade.einsums)} launches)",),
    )


def _estimate(mapping: dict, **values: Any) -> Estimate:
    """An Estimate, with the mapping the model used where the Estimate has that field."""
    if "mapping" in {f.name for f in fields(Estimate)}:
        values["mapping"] = mapping
    return Estimate(**values)


# --- helpers ------------------------------------------------------------------------------------


def _as_target(target: Any) -> Any:
    if isinstance(target, str):
        from einsim.targets import load_target

        return load_target(target)
    return target


def _as_cascade(cascade: Any) -> Any:
    if isinstance(cascade, str):
        from einsim.einsum_cascades import load_cascade

        return load_cascade(cascade)
    return cascade


def _family(cascade: Any, rank: str) -> set[str]:
    """A rank and every part of its partitions (M -> M1, M0; M -> MC, MT -> M1, M0)."""
    family = {rank}
    parts = getattr(cascade, "partitions", {})
    stack = [rank]
    while stack:
        for part in parts.get(stack.pop(), ()):
            if part not in family:
                family.add(part)
                stack.append(part)
    return family


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


def _bind(cascade: Any, problem: Problem, block_n: int, splits: int = 1, window: tuple[int, int] | None = None) -> dict[str, int]:
    """Rank sizes for the cascade: the workload's, the K/V tile (innermost part of M) = block_n,
    the outermost part of a two-level M partition (decode-splitkv's MC) = splits, the window."""
    given: dict[str, int] = {rank: size for rank, size in problem.rank_sizes().items() if rank in cascade.ranks}
    symbols = getattr(cascade, "symbols", {})
    if window is not None and "window_left" in symbols:
        given["window_left"], given["window_right"] = window
    parts = dict(getattr(cascade, "partitions", {}))
    if "M" in parts:
        chain = parts["M"]
        if chain[-1] in parts:  # two levels: M -> (MC, MT), MT -> (M1, M0)
            _set_rank(cascade, given, chain[0], splits)
            inner = parts[chain[-1]][-1]
        else:
            inner = chain[-1]
        _set_rank(cascade, given, inner, block_n)
    return cascade.bind(given)


def _set_rank(cascade: Any, given: dict[str, int], rank: str, value: int) -> None:
    """Bind a rank through its symbol when it is a plain symbol (so ranks sharing it agree)."""
    size = cascade.ranks.get(rank)
    if isinstance(size, str) and size.isidentifier():
        given[size] = value
    else:
        given[rank] = value


def _cascade_mask(cascade: Any, problem: Problem) -> tuple[bool, tuple[int, int] | None]:
    """The mask the GPU visits tiles for: the workload's, and the cascade's own causal or window
    filter even when the workload does not ask for one (attention-causal, attention-window)."""
    causal = problem.causal
    window = problem.window
    texts = {str(f).replace(" ", "") for f in getattr(cascade, "filters", ())}
    if "m<=p+M-P" in texts:
        causal = True
    if window is None and window_binding(cascade, problem):  # raises: no window to invent
        window = problem.window
    return causal, window


def _is_attention(cascade: Any) -> bool:
    """Softmax attention as the GPU mapping understands it: an exp over both the key (M) and the
    query (P) ranks, and inputs streamed along M."""
    family_m, family_p = _family(cascade, "M"), _family(cascade, "P")
    if "M" not in cascade.ranks or "P" not in cascade.ranks:
        return False
    has_exp = any("exp" in e.map_ops and set(e.iteration_ranks) & family_m and set(e.iteration_ranks) & family_p for e in cascade.einsums)
    streamed = any(set(ranks) & family_m and not set(ranks) & family_p for ranks in cascade.inputs.values())
    return has_exp and streamed


def _is_matmul(einsum: Any) -> bool:
    """A product of two tensors summed over a contracted rank: tensor-core work."""
    return (
        einsum.map_ops == ("mul",)
        and einsum.reduce_op == "sum"
        and len(einsum.operand_tensors) == 2
        and bool(einsum.reduced_ranks)
    )


def _contracted(einsum: Any, sizes: Mapping[str, int]) -> float:
    return float(math.prod(sizes[r] for r in einsum.reduced_ranks)) or 1.0


def _recompute_plan(cascade: Any, report: Any, family_m: set[str]) -> dict[int, list[str]]:
    """For each later pass, the Einsums rerun there: those that produce a tensor that grows with
    M, was made in an earlier pass and is read again, and, transitively, every earlier-pass
    operand of theirs that grows with M (a pass keeps nothing per key from an earlier launch).
    Earlier-pass operands that do not grow with M (row statistics) are read back from HBM."""
    producer = {e.output: e for e in cascade.einsums}
    growing = {t.tensor for t in report.live_across_passes if t.grows_with_rank and t.produced_in > 0}
    plan: dict[int, list[str]] = {}
    for einsum in cascade.einsums:
        k = report.einsum_pass.get(einsum.output, 1)
        for tensor in einsum.operand_tensors:
            if tensor in growing and report.einsum_pass.get(tensor, 1) < k:
                _add_recompute(tensor, k, producer, report, family_m, plan)
    return plan


def _add_recompute(tensor: str, k: int, producer: dict, report: Any, family_m: set[str], plan: dict) -> None:
    names = plan.setdefault(k, [])
    if tensor in names:
        return
    einsum = producer[tensor]
    for operand in einsum.operand_tensors:
        if (operand in producer and report.einsum_pass.get(operand, 1) < k
                and set(producer[operand].output_ranks) & family_m):
            _add_recompute(operand, k, producer, report, family_m, plan)
    names.append(tensor)


def _runs(cascade: Any, report: Any, recompute: dict[int, list[str]], skipped: set[str]) -> list[tuple[int, Any]]:
    """(pass, Einsum) of every run: each Einsum in its own pass unless skipped, plus reruns."""
    producer = {e.output: e for e in cascade.einsums}
    runs = [(report.einsum_pass.get(e.output, 1), e) for e in cascade.einsums if e.output not in skipped]
    runs += [(k, producer[n]) for k, names in sorted(recompute.items()) for n in names]
    return sorted(runs, key=lambda item: item[0])


def _skipped_native(cascade: Any, report: Any, recompute: dict[int, list[str]]) -> set[str]:
    """Einsums a recompute mapping need not run in their own pass: nothing there reads them and
    every later pass that reads them reruns them (e.g. SLNV of the 2-pass cascade: pass 1 then
    reads no V). Found backwards, so a chain that only feeds skipped Einsums is skipped too."""
    if not recompute:
        return set()
    consumers: dict[str, list[tuple[int, Any]]] = {}
    for k, einsum in _runs(cascade, report, recompute, set()):
        for operand in einsum.operand_tensors:
            consumers.setdefault(operand, []).append((k, einsum))
    rerun = {(k, n) for k, names in recompute.items() for n in names}
    skipped: set[str] = set()
    for einsum in reversed(cascade.einsums):
        name, own = einsum.output, report.einsum_pass.get(einsum.output, 1)
        if name in cascade.outputs:
            continue
        needed = False
        for k, consumer in consumers.get(name, []):
            native = (k, consumer.output) not in rerun
            if k == own and native and consumer.output not in skipped:
                needed = True  # read in its own pass
            elif k > own and (k, name) not in rerun:
                needed = True  # read back from HBM by a later pass that does not rerun it
        if not needed:
            skipped.add(name)
    return skipped


def _crossing_intermediates(cascade: Any, report: Any, recompute: dict[int, list[str]],
                            skipped: set[str]) -> dict[str, tuple[int, list[int]]]:
    """Intermediate -> (pass that writes it to HBM, passes that read it back): every operand an
    Einsum run in pass k (reruns included) takes from an earlier pass without recomputing it."""
    producer = {e.output: e for e in cascade.einsums}
    runs = _runs(cascade, report, recompute, skipped)
    crossing: dict[str, tuple[int, list[int]]] = {}
    for k, einsum in runs:
        for operand in einsum.operand_tensors:
            made_in = report.einsum_pass.get(operand, 1)
            if operand in producer and made_in < k and operand not in recompute.get(k, ()):
                read_in = crossing.setdefault(operand, (made_in, []))[1]
                if k not in read_in:
                    read_in.append(k)
    return {name: (made, sorted(read)) for name, (made, read) in crossing.items()}


def _visited_share(ranks: Any, shape: tuple[int, ...], family_m: set[str], family_p: set[str],
                   visit: TileVisit) -> float:
    """Fraction of a tensor's elements on visited tiles: per key ((row, key) pairs of visited
    tiles) if it has a per-key rank, per key tile ((row, tile) pairs) if only a tile rank."""
    m_ranks = [r for r in ranks if r in family_m]
    if not m_ranks:
        return 1.0
    extent = float(math.prod(n for r, n in zip(ranks, shape) if r in family_m or r in family_p))
    per_tile_only = all(r == "M1" for r in m_ranks)
    pairs = visit.row_tile_pairs if per_tile_only else visit.row_key_pairs
    return pairs / extent if extent else 0.0


def _inputs_per_pass(cascade: Any, report: Any, recompute: dict[int, list[str]],
                     skipped: set[str] = frozenset()) -> dict[int, dict[str, str]]:
    """Pass -> {input tensor -> the first Einsum that reads it in that pass} (reruns included)."""
    per_pass: dict[int, dict[str, str]] = {}
    for k, einsum in _runs(cascade, report, recompute, set(skipped)):
        for tensor in einsum.operand_tensors:
            if tensor in cascade.inputs:
                per_pass.setdefault(k, {}).setdefault(tensor, einsum.output)
    return per_pass


def _input_bytes(cascade: Any, name: str, sizes: Mapping[str, int], word: int) -> float:
    return float(cascade.tensor_elements(name, sizes)) * word


def _einsum_buffer(einsum: Any, rows: int, block_n: int, E: int, F: int) -> float:
    """On-chip bytes one CTA holds for an Einsum's output tile (fp32 accumulators)."""
    ranks = set(einsum.output_ranks)
    extent = rows
    if ranks & {"M0", "M"}:
        extent *= block_n
    if "F" in ranks:
        extent *= F
    elif "E" in ranks:
        extent *= E
    return float(extent * 4)
