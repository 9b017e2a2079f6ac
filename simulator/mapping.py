"""How a cascade is laid onto a spatial target: fusion groups, tiles, query blocks, what stays on
chip, the binding of Einsums to arrays and the schedule; defaults derived per design, overridable
from a YAML mapping file validated like the targets (docs/simulator.md §2). This module is the
spec (fields, file parsing); the spatial model's defaults are simulator/spatial/defaults.py.

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


from einsim.errors import SpecError, brief, did_you_mean
from einsim.files import is_file
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
    fail = _failer(source)
    if document is None:
        return Mapping(source=source)
    if not isinstance(document, dict):
        fail("mapping", f"a mapping with some of {', '.join(_FIELDS)}", document)
    for key in document:
        if key not in _FIELDS:
            fail(str(key), f"one of the fields {', '.join(_FIELDS)}{did_you_mean(key, _FIELDS)}", key)

    def positive(name: str) -> int | None:
        value = document.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            fail(name, "a positive integer", value)
        return value

    def choice(name: str, choices: tuple[str, ...]) -> str | None:
        value = document.get(name)
        if value is not None and value not in choices:
            fail(name, "one of " + ", ".join(choices), value)
        return value

    binding, style = _parse_binding(document.get("binding") or {}, fail)
    return Mapping(
        dataflow=choice("dataflow", DATAFLOWS),
        key_tile=positive("key_tile"),
        query_tile=positive("query_tile"),
        query_block=positive("query_block"),
        schedule=choice("schedule", SCHEDULES),
        spill=choice("spill", SPILL_POLICIES + (OVERBOOK,)),
        binding=binding,
        binding_style=style,
        groups=_parse_groups(document.get("groups"), fail),
        staging=_parse_staging(document.get("staging"), fail),
        stationarity=_parse_stationarity(document.get("stationarity") or {}, fail),
        buffering=choice("buffering", tuple(BUFFERING)),
        source=source,
    )


def _failer(source: str):
    def fail(path: str, expected: str, got: Any) -> None:
        raise SpecError(f"{source}: {path}: expected {expected}, got {brief(got)}")

    return fail


def _parse_binding(binding_doc: Any, fail) -> tuple[dict[str, str], str | None]:
    """`binding: flat | fusemax` or `{Einsum: pe_2d | pe_1d, style: ...}` -> (per Einsum, style)."""
    if isinstance(binding_doc, str):
        binding_doc = {"style": binding_doc}
    if not isinstance(binding_doc, dict):
        fail("binding", "flat, fusemax, or a mapping of Einsum name -> pe_2d | pe_1d (and optionally style)", binding_doc)
    binding, style = {}, None
    for einsum, unit in binding_doc.items():
        if einsum == "style":
            if unit not in BINDING_STYLES:
                fail("binding.style", "flat or fusemax", unit)
            style = unit
            continue
        if unit not in UNITS:
            fail(f"binding.{einsum}", "pe_2d or pe_1d", unit)
        binding[str(einsum)] = unit
    return binding, style


def _parse_groups(groups_doc: Any, fail) -> tuple[tuple[str, ...], ...] | None:
    """`groups: [[QK, GM, ...], [...]]`: the fusion groups, each a list of Einsum names."""
    if groups_doc is None:
        return None
    if not isinstance(groups_doc, list) or not groups_doc:
        fail("groups", "a non-empty list of lists of Einsum names", groups_doc)
    parsed = []
    for i, group in enumerate(groups_doc):
        if not isinstance(group, list) or not group or not all(isinstance(n, str) for n in group):
            fail(f"groups[{i}]", "a non-empty list of Einsum names", group)
        parsed.append(tuple(group))
    return tuple(parsed)


def _parse_staging(staging: Any, fail) -> str | dict[str, str] | None:
    """`staging: <plan>` or `{tensor: buffer | stream}`."""
    if isinstance(staging, dict):
        for tensor, where in staging.items():
            if where not in STAGINGS:
                fail(f"staging.{tensor}", "buffer or stream", where)
        return {str(k): v for k, v in staging.items()}
    if staging is not None and staging not in STAGING_PLANS:
        fail("staging", f"one of {', '.join(STAGING_PLANS)}, or a mapping of tensor -> buffer | stream", staging)
    return staging


def _parse_stationarity(stationarity: Any, fail) -> dict[str, str]:
    """`stationarity: {contraction: output | weight | input}`."""
    if not isinstance(stationarity, dict):
        fail("stationarity", "a mapping of contraction -> output | weight | input", stationarity)
    for einsum, kind in stationarity.items():
        if kind not in STATIONARITIES:
            fail(f"stationarity.{einsum}", "output, weight or input", kind)
    return {str(k): v for k, v in stationarity.items()}
