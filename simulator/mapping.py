"""How a cascade is laid onto a spatial target: fusion groups, tiles, query blocks, what stays on
chip, the binding of Einsums to arrays and the schedule; defaults derived per design, overridable
from a YAML mapping file validated like the targets (docs/simulator.md §2).

A *design* of the FuseMax paper is a target plus its dataflow:

- ``fusemax``: one fusion group; the key rank is split into tiles of ``key_tile`` (M0, the 2D
  array's rows) and queries into tiles of ``query_tile`` (P0, its columns); one (M0 x P0) tile is
  an *epoch*; queries are processed in blocks of ``query_block`` (P1*P0) whose per-query state
  (Q, running max/denominator/numerator) stays in the global buffer; every Einsum on the M x P
  plane goes to the 2D array (exp as sequential MACs), running statistics to the 1D array.
- ``flat``: FLAT's row-granular fusion: one fusion group over a block of ``query_block`` query
  rows; contractions on the 2D array, the whole softmax on the 1D array. ``staging`` says which
  tensors the global buffer holds (FLAT's own policy: the block's rows of QK/SN/A, with Q, K, V
  and the output streaming past; or, when those rows cannot fit, the rows streaming through DRAM)
  and ``stationarity`` each contraction's inner dataflow (§5.6); ``staging: resident`` is the
  FuseMax paper's reading of FLAT instead (K and V kept on chip when they fit, QK rows spilled by
  storing or recomputing, §5.1-5.3).
- ``unfused``: every contraction is its own kernel and the softmax between them one kernel; all
  tensors between kernels go through DRAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from einsim.errors import ConfigError, SpecError, brief
from einsim.files import is_file
from einsim.simulator.functions import primitive_kinds
from einsim.targets.loader import read_yaml_file

DATAFLOWS = ("unfused", "flat", "fusemax")
SCHEDULES = ("pipelined", "sequential")
SPILL_POLICIES = ("store", "recompute")
OVERBOOK = "overbook"  # FLAT's staging: an overbooked buffer sends a share of each access to DRAM (§5.6)
STAGING_PLANS = ("flat", "fused", "rows", "resident")  # "flat": FLAT's policy, fused or rows, searched
STAGINGS = ("buffer", "stream")
STATIONARITIES = ("output", "weight", "input")
BUFFERING = {"single": 1, "double": 2}
UNITS = ("pe_2d", "pe_1d")
BINDING_STYLES = ("flat", "fusemax")  # contractions only on the 2D array | the whole M x P plane

_FIELDS = ("dataflow", "key_tile", "query_tile", "query_block", "schedule", "spill", "binding", "groups", "staging",
           "stationarity", "buffering")


@dataclass(frozen=True)
class Mapping:
    """A mapping as the user gives it: every field None means "derive the design's default".

    key_tile: M0, the key rank's tile (rows of the 2D array in an epoch); only for cascades that
    partition the key rank. query_tile: P0, queries per epoch (columns of the 2D array).
    query_block: queries whose per-query state stays on chip at once (FuseMax's P1*P0, FLAT's row
    block); None searches it. schedule: "pipelined" overlaps epochs (software pipelining: each
    array is busy as long as it has work), "sequential" runs each unit's Einsums in program order
    with the array's drain latency exposed (the paper's "+Architecture" step). spill: what happens
    to live state that does not fit: "store" writes it to DRAM and reads it back in each later
    pass, "recompute" re-reads the inputs and recomputes it; None picks the faster.
    binding: Einsum -> "pe_2d" | "pe_1d" overrides; binding_style: the rule for the rest, "flat"
    (only contractions on the 2D array) or "fusemax" (every Einsum on the key-tile x query plane
    on the 2D array), by default the dataflow's own. groups: fusion groups (kernels) as lists of
    Einsum names, in cascade order. staging (flat dataflow): "flat" (FLAT's own policy: the
    faster of "fused" and "rows"), "fused" (the block's plane rows in the buffer, inputs and output
    streamed), "rows" (planes streamed through DRAM, the block's queries and output staged),
    "resident" (the FuseMax paper's reading: K/V kept when they fit, rows spilled), or a mapping
    tensor -> buffer | stream over the fused plan. stationarity: contraction -> output | weight |
    input (§5.6). buffering: "double" (default: a streamed tile loads while the previous one is
    used) or "single" (the FuseMax artifact's buffer sizing).
    """

    dataflow: str | None = None
    key_tile: int | None = None
    query_tile: int | None = None
    query_block: int | None = None
    schedule: str | None = None
    spill: str | None = None
    binding: dict[str, str] = field(default_factory=dict)
    binding_style: str | None = None
    groups: tuple[tuple[str, ...], ...] | None = None
    staging: str | dict[str, str] | None = None
    stationarity: dict[str, str] = field(default_factory=dict)
    buffering: str | None = None
    source: str = "<mapping>"

    def __hash__(self) -> int:
        staging = tuple(sorted(self.staging.items())) if isinstance(self.staging, dict) else self.staging
        return hash((self.dataflow, self.key_tile, self.query_tile, self.query_block, self.schedule,
                     self.spill, tuple(sorted(self.binding.items())), self.binding_style, self.groups,
                     staging, tuple(sorted(self.stationarity.items())), self.buffering))


@dataclass(frozen=True)
class ResolvedMapping:
    """Every decision made: what spatial.Design compiles. query_blocks lists the candidates the
    model searches (one value when the user fixed it)."""

    dataflow: str
    groups: tuple[tuple[str, ...], ...]
    binding: dict[str, str]
    key_tile: int | None  # None: the cascade does not partition the key rank
    query_tile: int
    query_blocks: tuple[int, ...]
    schedule: str
    spills: tuple[str, ...]  # policies to try ("store",), ("recompute",) or both; ("overbook",) when staged
    key_rank_1d: bool  # the 1D array spreads the key rank (FLAT's softmax) instead of queries
    staging: str | dict[str, str] | None = None  # None: the resident model (§5.1-5.3); else §5.6
    stationarity: dict[str, str] = field(default_factory=dict)
    buffering: int = 2  # copies of each streamed tile (§5.1, §5.6)

    def describe(self, query_blocks: list[int], spills: list[str], plans: list | None = None) -> dict[str, Any]:
        """The chosen mapping as plain data (Estimate.mapping): one query block and spill policy
        per group, and what each staged group keeps in the buffer. Loading it back with
        load_mapping reproduces the estimate."""
        out: dict[str, Any] = {"dataflow": self.dataflow}
        if self.key_tile is not None:
            out["key_tile"] = self.key_tile
        out.update(query_tile=self.query_tile, schedule=self.schedule,
                   query_block=query_blocks[0] if len(set(query_blocks)) == 1 else list(query_blocks),
                   spill=spills[0] if len(set(spills)) == 1 else list(spills),
                   groups=[list(g) for g in self.groups], binding=dict(self.binding),
                   buffering={v: k for k, v in BUFFERING.items()}[self.buffering])
        staged = [p for p in (plans or []) if p is not None]
        if staged:
            out["staging"] = dict(staged[0].staging)
            out["stationarity"] = dict(staged[0].stationarity)
        elif self.staging == "resident":
            out["staging"] = "resident"
        return out


# --- loading ---------------------------------------------------------------------------------


def load_mapping(value: "Mapping | dict | str | Path | None") -> Mapping:
    """A Mapping from a Mapping, a dict (as from YAML) or a YAML file path; None is all defaults."""
    if value is None:
        return Mapping()
    if isinstance(value, Mapping):
        return value
    if isinstance(value, dict):
        return parse_mapping(value, "<mapping>")
    path = Path(value)
    if not is_file(path):
        raise SpecError(f"{brief(str(value))}: no such mapping file")
    return parse_mapping(read_yaml_file(path, str(value)), str(value))


def parse_mapping(document: Any, source: str = "<mapping>") -> Mapping:
    """Validate a mapping document; messages read `file: field: expected ..., got ...`."""

    def fail(path: str, expected: str, got: Any) -> None:
        raise SpecError(f"{source}: {path}: expected {expected}, got {brief(got)}")

    if document is None:
        return Mapping(source=source)
    if not isinstance(document, dict):
        fail("mapping", f"a mapping with some of {', '.join(_FIELDS)}", document)
    for key in document:
        if key not in _FIELDS:
            fail(str(key), f"one of the fields {', '.join(_FIELDS)}", key)

    def positive(name: str) -> int | None:
        value = document.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            fail(name, "a positive integer", value)
        return value

    def choice(name: str, choices: tuple[str, ...]) -> str | None:
        value = document.get(name)
        if value is None:
            return None
        if value not in choices:
            fail(name, "one of " + ", ".join(choices), value)
        return value

    binding_doc = document.get("binding") or {}
    style = None
    if isinstance(binding_doc, str):
        binding_doc = {"style": binding_doc}
    if not isinstance(binding_doc, dict):
        fail("binding", "flat, fusemax, or a mapping of Einsum name -> pe_2d | pe_1d (and optionally style)", binding_doc)
    binding = {}
    for einsum, unit in binding_doc.items():
        if einsum == "style":
            if unit not in BINDING_STYLES:
                fail("binding.style", "flat or fusemax", unit)
            style = unit
            continue
        if unit not in UNITS:
            fail(f"binding.{einsum}", "pe_2d or pe_1d", unit)
        binding[str(einsum)] = unit

    groups = None
    if document.get("groups") is not None:
        groups_doc = document["groups"]
        if not isinstance(groups_doc, list) or not groups_doc:
            fail("groups", "a non-empty list of lists of Einsum names", groups_doc)
        parsed = []
        for i, group in enumerate(groups_doc):
            if not isinstance(group, list) or not group or not all(isinstance(n, str) for n in group):
                fail(f"groups[{i}]", "a non-empty list of Einsum names", group)
            parsed.append(tuple(group))
        groups = tuple(parsed)

    staging = document.get("staging")
    if isinstance(staging, dict):
        for tensor, where in staging.items():
            if where not in STAGINGS:
                fail(f"staging.{tensor}", "buffer or stream", where)
        staging = {str(k): v for k, v in staging.items()}
    elif staging is not None and staging not in STAGING_PLANS:
        fail("staging", f"one of {', '.join(STAGING_PLANS)}, or a mapping of tensor -> buffer | stream", staging)
    stationarity = document.get("stationarity") or {}
    if not isinstance(stationarity, dict):
        fail("stationarity", "a mapping of contraction -> output | weight | input", stationarity)
    for einsum, kind in stationarity.items():
        if kind not in STATIONARITIES:
            fail(f"stationarity.{einsum}", "output, weight or input", kind)

    return Mapping(
        dataflow=choice("dataflow", DATAFLOWS),
        key_tile=positive("key_tile"),
        query_tile=positive("query_tile"),
        query_block=positive("query_block"),
        schedule=choice("schedule", SCHEDULES),
        spill=choice("spill", SPILL_POLICIES + (OVERBOOK,)),
        binding=binding,
        binding_style=style,
        groups=groups,
        staging=staging,
        stationarity={str(k): v for k, v in stationarity.items()},
        buffering=choice("buffering", tuple(BUFFERING)),
        source=source,
    )


# --- defaults --------------------------------------------------------------------------------


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
            binding[einsum.output] = "pe_2d" if is_contraction(einsum) else "pe_1d"
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
    ops = primitive_kinds(einsum.map_ops)  # a function binds by what it computes (sigmoid divides)
    needs_1d = "div" in ops or ("exp" in ops and not exp_on_2d)
    return "pe_2d" if on_plane and not needs_1d else "pe_1d"
