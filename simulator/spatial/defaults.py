"""The spatial model's default mapping (docs/simulator.md §2): the dataflow, fusion groups,
tiles, query-block candidates, binding and staging a design gets for whatever a mapping file
leaves unset, resolved against the cascade and the target into a ResolvedMapping. The mapping
spec itself (fields, file parsing) is simulator/mapping.py."""

from __future__ import annotations

from einsim.errors import ConfigError
from einsim.simulator.functions import primitive_kinds
from einsim.simulator.mapping import (
    BUFFERING,
    OVERBOOK,
    SPILL_POLICIES,
    Mapping,
    ResolvedMapping,
)


def is_contraction(einsum) -> bool:
    """A matmul-like Einsum: products summed over a rank (QK, AV, SLNV). The 2D array's work in
    every design; FLAT and the unfused baseline give it nothing else."""
    return einsum.reduce_op == "sum" and bool(einsum.reduced_ranks) and "mul" in einsum.map_ops


def resolve_mapping(mapping: Mapping, cascade, target, report, problem) -> ResolvedMapping:
    """Fill every None of `mapping` with the design's default (docs/simulator.md §2) and check
    that what the user fixed is consistent with the cascade and the target (ConfigError)."""
    rows, cols = array_shape(target)
    names = [e.output for e in cascade.einsums]
    key_rank = report.rank
    partitioned = key_rank in cascade.partitions
    dataflow = mapping.dataflow or target.dataflow or ("fusemax" if report.passes == 1 else "flat")
    if dataflow == "fusemax" and not partitioned:
        if mapping.dataflow == "fusemax":
            raise ConfigError(f"{mapping.source}: dataflow fusemax needs a cascade that partitions {key_rank} into tiles "
                              f"({cascade.name} does not); use dataflow flat or unfused")
        dataflow = "flat"  # a cascade without key tiles has no tile-granular fusion: row fusion

    if mapping.groups is not None:
        listed = [n for g in mapping.groups for n in g]
        unknown = [n for n in listed if n not in names]
        if unknown:
            raise ConfigError(f"{mapping.source}: groups: no Einsum {unknown[0]!r} in {cascade.name} ({', '.join(names)})")
        if sorted(listed) != sorted(names):
            missing = [n for n in names if n not in listed]
            raise ConfigError(f"{mapping.source}: groups must list every Einsum once; missing or repeated: {missing or 'repeats'}")
        groups = mapping.groups
    elif dataflow == "unfused":
        groups = _unfused_groups(cascade)
    else:
        groups = (tuple(names),)

    exp_unit = target.unit("exp")
    exp_on_2d = exp_unit.via is not None and target.compute_units[exp_unit.via].kind == "matrix"
    style = mapping.binding_style or ("fusemax" if dataflow == "fusemax" else "flat")
    if style == "fusemax" and not partitioned:
        raise ConfigError(f"{mapping.source}: binding fusemax binds the key-tile plane to the 2D array; {cascade.name} has no key tiles")
    binding = {}
    for einsum in cascade.einsums:
        if style == "fusemax":
            binding[einsum.output] = _fusemax_unit(einsum, cascade, key_rank, exp_on_2d)
        else:
            binding[einsum.output] = "pe_2d" if is_contraction(einsum) and not _needs_1d(einsum, exp_on_2d) else "pe_1d"
    for name, unit in mapping.binding.items():
        if name not in names:
            raise ConfigError(f"{mapping.source}: binding: no Einsum {name!r} in {cascade.name} ({', '.join(names)})")
        binding[name] = unit

    key_tile = None
    if partitioned:
        key_tile = mapping.key_tile or rows
    elif mapping.key_tile is not None:
        raise ConfigError(f"{mapping.source}: key_tile: {cascade.name} does not partition {key_rank} into tiles")
    query_len = problem.q_len * problem.group_size
    query_tile = min(mapping.query_tile or cols, query_len)
    if mapping.query_block is not None:
        blocks = (min(mapping.query_block, query_len),)
    else:
        blocks = query_block_candidates(query_len, query_tile)
    staging = _resolve_staging(mapping, cascade, dataflow, partitioned, binding, names)
    if staging is not None and staging != "resident":
        if mapping.spill not in (None, OVERBOOK):
            raise ConfigError(f"{mapping.source}: spill: {mapping.spill} applies to staging: resident; FLAT's staging "
                              f"overbooks the buffer (docs/simulator.md §5.6): drop spill or set staging: resident")
        spills: tuple[str, ...] = (OVERBOOK,)
    elif mapping.spill == OVERBOOK:
        raise ConfigError(f"{mapping.source}: spill: overbook is FLAT's staging (dataflow flat); use store or recompute")
    else:
        spills = (mapping.spill,) if mapping.spill else (SPILL_POLICIES if report.passes > 1 else ("store",))
    return ResolvedMapping(
        dataflow=dataflow,
        groups=tuple(tuple(g) for g in groups),
        binding=binding,
        key_tile=key_tile,
        query_tile=query_tile,
        query_blocks=blocks,
        schedule=mapping.schedule or "pipelined",
        spills=spills,
        key_rank_1d=dataflow != "fusemax",
        staging=staging,
        stationarity=dict(mapping.stationarity),
        buffering=BUFFERING[mapping.buffering or "double"],
    )


def _resolve_staging(mapping: Mapping, cascade, dataflow: str, partitioned: bool, binding: dict[str, str],
                     names: list[str]) -> str | dict[str, str] | None:
    """FLAT's staging (§5.6) applies to the flat dataflow of a cascade without key tiles whose
    contractions run on the 2D array; everything else uses the resident model (None)."""
    wanted = mapping.staging
    contractions = [n for n in names if binding[n] == "pe_2d" and is_contraction(cascade.einsum(n))]
    if wanted is None and not mapping.stationarity:
        # FLAT fuses two contractions around the softmax; a lone GEMM or a 1-pass cascade is
        # mapped by the resident model
        if dataflow != "flat" or partitioned or mapping.groups is not None or len(contractions) < 2:
            return None
        return "flat"
    if wanted == "resident" and not mapping.stationarity:
        return "resident"  # the resident model, which every dataflow has
    if dataflow != "flat" or partitioned:
        why = "its key rank is split into tiles (a 1-pass cascade)" if partitioned else f"the dataflow is {dataflow}"
        raise ConfigError(f"{mapping.source}: staging/stationarity describe FLAT's dataflow (dataflow flat on a cascade "
                          f"without key tiles); here {why}: drop them")
    tensors = cascade.tensors
    if isinstance(wanted, dict):
        for tensor in wanted:
            if tensor not in tensors:
                raise ConfigError(f"{mapping.source}: staging: no tensor {tensor!r} in {cascade.name} ({', '.join(tensors)})")
    for einsum in mapping.stationarity:
        if einsum not in contractions:
            raise ConfigError(f"{mapping.source}: stationarity: {einsum!r} is not a contraction on the 2D array "
                              f"of {cascade.name} ({', '.join(contractions) or 'none'})")
    return wanted if wanted is not None else "flat"


def query_block_candidates(query_len: int, query_tile: int) -> tuple[int, ...]:
    """Powers of two times the query tile up to the query length, plus the blocks smaller than
    one tile (a row block narrower than the array; FLAT's way to fit long rows)."""
    found = set()
    block = 1
    while block < query_len:
        found.add(block)
        block *= 2
    found.add(query_len)
    block = query_tile
    while block < query_len:
        found.add(block)
        block *= 2
    return tuple(sorted(found))


def array_shape(target) -> tuple[int, int]:
    """(rows, cols) of the target's 2D array (its matrix unit)."""
    unit = target.unit("matrix")
    shape = unit.shape or ()
    if len(shape) != 2:
        raise ConfigError(f"{target.name}: the spatial model needs the matrix unit's shape as [rows, cols], got {shape!r}")
    return int(shape[0]), int(shape[1])


def vector_length(target) -> int:
    unit = target.unit("vector")
    shape = unit.shape or (unit.count,)
    return int(shape[0])


def _unfused_groups(cascade) -> tuple[tuple[str, ...], ...]:
    """Each contraction alone; every run of other Einsums between them one kernel (the softmax)."""
    groups: list[list[str]] = []
    run: list[str] = []
    for einsum in cascade.einsums:
        if is_contraction(einsum):
            if run:
                groups.append(run)
                run = []
            groups.append([einsum.output])
        else:
            run.append(einsum.output)
    if run:
        groups.append(run)
    return tuple(tuple(g) for g in groups)


def key_leaf(cascade, key_rank: str) -> str | None:
    """The innermost tile rank of the key rank (M0 of M -> M1 x M0, also through nested splits
    such as M -> MC x MT, MT -> M1 x M0); None when the key rank is not partitioned."""
    if key_rank not in cascade.partitions:
        return None
    rank = key_rank
    while rank in cascade.partitions:
        rank = cascade.partitions[rank][-1]
    return rank


def _fusemax_unit(einsum, cascade, key_rank: str, exp_on_2d: bool) -> str:
    """FuseMax's binding: Einsums on the key-tile x query plane (they iterate M0) go to the 2D
    array, whose PEs can multiply, add, compare and (when the target computes exp with MACs on
    the 2D array) exponentiate; running statistics, corrections and divisions to the 1D array."""
    on_plane = key_leaf(cascade, key_rank) in einsum.iteration_ranks
    return "pe_2d" if on_plane and not _needs_1d(einsum, exp_on_2d) else "pe_1d"


def _needs_1d(einsum, exp_on_2d: bool) -> bool:
    """The 2D array's PEs multiply, add and compare; they have no divider, and compute exp only
    where the target runs exp on them (FuseMax's 6 MACs). A function binds by what it computes
    (sigmoid divides: simulator/functions.py)."""
    ops = primitive_kinds(einsum.map_ops)
    return "div" in ops or ("exp" in ops and not exp_on_2d)
