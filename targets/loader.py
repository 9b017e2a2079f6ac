"""Load and validate target YAML (a preset name or a path) into a frozen Target; every problem is a
SpecError naming the file, the field path and what was expected (schema: docs/targets.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from einsim.errors import SpecError, brief, did_you_mean
from einsim.files import exists, is_file, is_folder
from einsim import units
from einsim.yamlio import read_yaml_file  # also the mapping, model and GPU-mapping readers' import
from einsim.targets.spec import ARCHITECTURES, COMPUTE_KINDS, DATAFLOWS, OP_KINDS, TARGET_KINDS, ComputeUnit, MemoryLevel, Target

PRESET_DIR = Path(__file__).resolve().parent / "presets"

_TOP_REQUIRED = ("name", "kind", "clock", "word_size", "parallel_units", "compute", "memory")
_TOP_OPTIONAL = ("description", "display_name", "default_dtype", "launch_overhead", "dataflow", "architecture", "sources")
_PARALLEL_KEYS = ("name", "count")
_UNIT_REQUIRED = ("kind",)
_UNIT_OPTIONAL = ("count", "shape", "ops_per_cycle", "via", "ops_per_exp", "datasheet_peak", "measured_peak", "energy_per_op", "energy_per_op_kind", "notes")
_MEMORY_REQUIRED = ("name", "capacity", "instances", "bandwidth", "read_energy", "write_energy")
_MEMORY_OPTIONAL = ("measured_bandwidth", "notes", "accesses_per_cycle")
_DTYPES = ("fp8", "int8", "fp16", "bf16", "tf32", "fp32", "fp64")


MAX_COUNT = 1 << 31  # any count in a target: SMs, units per SM, PEs, memory instances
# A peak the target states may differ from the one its counts imply (boost clocks, derated
# measurements) but not by this factor either way: that is a per-SM count given for the whole
# chip (or the reverse), which silently scales every compute time by the SM count.
PEAK_RATIO_LIMIT = 4.0


def target_names() -> list[str]:
    """The shipped presets, sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_target(name_or_path: str | Path) -> Target:
    """A preset by name (`h100-sxm`) or a YAML file by path; both validated the same way."""
    text = str(name_or_path)
    path = Path(text)
    if text in target_names():
        return _load_file(str(PRESET_DIR / f"{text}.yaml"), f"targets/presets/{text}.yaml")
    if path.suffix in (".yaml", ".yml") or exists(path):
        if is_folder(path):
            raise SpecError(f"{brief(text)}: is a folder, not a target YAML file")
        if not is_file(path):
            raise SpecError(f"{text}: no such target file (presets: {', '.join(target_names())})")
        return _load_file(str(path.resolve()), text)
    raise SpecError(f"unknown target {brief(text)}{did_you_mean(text, target_names())}: expected a preset name "
                    f"({', '.join(target_names())}) or a path to a YAML file")


@lru_cache(maxsize=64)
def _load_file(resolved: str, shown: str) -> Target:
    return parse_target(read_yaml_file(resolved, shown), shown)


def parse_target(document: Any, source: str = "<target>") -> Target:
    """Validate a YAML document (already safe_loaded) into a Target."""
    check = _Checker(source)
    top = check.mapping(document, "", _TOP_REQUIRED, _TOP_OPTIONAL)
    name = check.string(top["name"], "name")
    kind = check.choice(top["kind"], "kind", TARGET_KINDS)
    clock_hz = check.quantity(top["clock"], "clock", "frequency")
    word_bytes_float = check.quantity(top["word_size"], "word_size", "bytes")
    if word_bytes_float != int(word_bytes_float):
        check.fail("word_size", "a whole number of bytes such as '2 B'", top["word_size"])
    word_bytes = int(word_bytes_float)

    parallel = check.mapping(top["parallel_units"], "parallel_units", _PARALLEL_KEYS, ())
    parallel_name = check.string(parallel["name"], "parallel_units.name")
    parallel_count = check.positive_int(parallel["count"], "parallel_units.count")

    default_dtype = check.choice(top.get("default_dtype", "bf16"), "default_dtype", _DTYPES)
    launch_overhead = check.quantity(top.get("launch_overhead", 0), "launch_overhead", "time") if "launch_overhead" in top else 0.0

    compute_doc = top["compute"]
    if not isinstance(compute_doc, dict) or not compute_doc:
        check.fail("compute", "a mapping of unit name -> unit (kind: matrix|vector|exp, ...)", compute_doc)
    compute: dict[str, ComputeUnit] = {}
    for unit_name, unit_doc in compute_doc.items():
        compute[str(unit_name)] = _compute_unit(check, str(unit_name), unit_doc, word_bytes)
    for unit in compute.values():
        if unit.via is not None and unit.via not in compute:
            check.fail(f"compute.{unit.name}.via", f"the name of another compute unit ({', '.join(n for n in compute if n != unit.name)})", unit.via)
        if unit.via is not None and compute[unit.via].via is not None:
            check.fail(f"compute.{unit.name}.via", "a unit that computes itself (not another 'via' unit)", unit.via)
    for needed in COMPUTE_KINDS:
        if not any(unit.kind == needed for unit in compute.values()):
            check.fail("compute", f"at least one unit of kind {needed!r} (units: matrix, vector, exp)", sorted(compute))

    memory_doc = top["memory"]
    if not isinstance(memory_doc, list) or len(memory_doc) < 2:
        check.fail("memory", "a list of at least two levels, innermost first (on-chip ..., off-chip last)", memory_doc)
    levels = tuple(_memory_level(check, f"memory[{i}]", level_doc, word_bytes) for i, level_doc in enumerate(memory_doc))
    seen: set[str] = set()
    for i, level in enumerate(levels):
        if level.name in seen:
            check.fail(f"memory[{i}].name", "a name not used by another level", level.name)
        seen.add(level.name)

    sources_doc = top.get("sources", [])
    if not isinstance(sources_doc, list) or not all(isinstance(s, str) for s in sources_doc):
        check.fail("sources", "a list of strings (citations)", sources_doc)
    description = check.string(top.get("description", ""), "description", allow_empty=True)
    display_name = check.string(top["display_name"], "display_name").strip() if "display_name" in top else ""
    dataflow = check.choice(top["dataflow"], "dataflow", DATAFLOWS) if "dataflow" in top else None
    architecture = check.choice(top["architecture"], "architecture", ARCHITECTURES) if "architecture" in top else None
    if architecture is not None and kind != "gpu":
        check.fail("architecture", "no architecture on a spatial target (only GPUs have one)", architecture)
    if dataflow is not None and kind != "spatial":
        check.fail("dataflow", "no dataflow on a GPU target (only spatial designs have one)", dataflow)
    target = Target(
        name=name,
        kind=kind,
        clock_hz=clock_hz,
        word_bytes=word_bytes,
        parallel_units=parallel_count,
        parallel_unit_name=parallel_name,
        compute_units=compute,
        memory_levels=levels,
        description=description,
        display_name=display_name,
        default_dtype=default_dtype,
        launch_overhead_s=launch_overhead,
        dataflow=dataflow,
        architecture=architecture or ("hopper" if kind == "gpu" else None),
        sources=tuple(sources_doc),
        source_path=source,
    )
    _check_peaks(check, target)
    return target


def _compute_unit(check: "_Checker", name: str, doc: Any, word_bytes: int) -> ComputeUnit:
    path = f"compute.{name}"
    unit = check.mapping(doc, path, _UNIT_REQUIRED, _UNIT_OPTIONAL)
    kind = check.choice(unit["kind"], f"{path}.kind", COMPUTE_KINDS)
    via = unit.get("via")
    if via is not None:
        via = check.string(via, f"{path}.via")
        if kind != "exp":
            check.fail(f"{path}.via", "no 'via' (only an exp unit may be computed on another unit)", via)
        for forbidden in ("ops_per_cycle", "count", "shape", "datasheet_peak", "measured_peak", "energy_per_op", "energy_per_op_kind"):
            if forbidden in unit:
                check.fail(f"{path}.{forbidden}", f"nothing: a 'via' unit takes its figures from {via!r} and ops_per_exp", unit[forbidden])
        ops_per_exp = check.positive_number(unit.get("ops_per_exp", 1), f"{path}.ops_per_exp")
        return ComputeUnit(name=name, kind=kind, count=0, ops_per_cycle={}, via=via, ops_per_exp=ops_per_exp, notes=str(unit.get("notes", "")))
    if "ops_per_exp" in unit:
        check.fail(f"{path}.ops_per_exp", "nothing unless 'via' names the unit that computes the exp", unit["ops_per_exp"])
    if "ops_per_cycle" not in unit:
        check.fail(path, "the field 'ops_per_cycle' (or 'via' for an exp computed on another unit)", sorted(unit))
    shape = None
    if "shape" in unit:
        raw = unit["shape"]
        if not isinstance(raw, list) or not raw or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw):
            check.fail(f"{path}.shape", "a list of positive integers such as [256, 256]", raw)
        shape = tuple(raw)
    product = 1
    for extent in shape or ():
        product *= extent
    count = check.positive_int(unit["count"], f"{path}.count") if "count" in unit else (product if shape else None)
    if count is None:
        check.fail(path, "the field 'count' (instances per parallel unit) or 'shape'", sorted(unit))
    if shape is not None and count != product:
        check.fail(f"{path}.count", f"the number of PEs in shape {list(shape)} ({product})", count)
    ops = check.dtype_table(unit["ops_per_cycle"], f"{path}.ops_per_cycle", lambda v, p: check.positive_number(v, p))
    datasheet = check.dtype_table(unit.get("datasheet_peak", {}), f"{path}.datasheet_peak", lambda v, p: _peak(check, v, p, kind), allow_empty=True)
    measured = check.dtype_table(unit.get("measured_peak", {}), f"{path}.measured_peak", lambda v, p: _peak(check, v, p, kind), allow_empty=True)
    energy = check.dtype_table(unit.get("energy_per_op", {}), f"{path}.energy_per_op", lambda v, p: check.quantity(v, p, "energy"), allow_empty=True)
    by_kind_doc = unit.get("energy_per_op_kind", {})
    if not isinstance(by_kind_doc, dict):
        check.fail(f"{path}.energy_per_op_kind", "a mapping of op kind (" + ", ".join(OP_KINDS) + ") -> energy", by_kind_doc)
    by_kind = {}
    for op_kind, value in by_kind_doc.items():
        if op_kind not in OP_KINDS:
            check.fail(f"{path}.energy_per_op_kind.{op_kind}", "an op kind (" + ", ".join(OP_KINDS) + ")", op_kind)
        by_kind[op_kind] = check.quantity(value, f"{path}.energy_per_op_kind.{op_kind}", "energy")
    return ComputeUnit(
        name=name,
        kind=kind,
        count=count,
        ops_per_cycle=ops,
        shape=shape,
        datasheet_peak=datasheet,
        measured_peak=measured,
        energy_per_op=energy,
        energy_per_op_kind=by_kind,
        notes=str(unit.get("notes", "")),
    )


def _peak(check: "_Checker", value: Any, path: str, kind: str) -> float:
    """A whole-target throughput in the unit's own operations: FLOP/s on a matrix unit becomes MAC/s
    and on a vector unit lane-ops/s (datasheets count an FMA as 2 FLOP)."""
    ops = check.quantity(value, path, "throughput")
    if kind in ("matrix", "vector") and units.throughput_unit(str(value)) == "FLOP":
        ops /= 2.0
    return ops


def _memory_level(check: "_Checker", path: str, doc: Any, word_bytes: int) -> MemoryLevel:
    level = check.mapping(doc, path, _MEMORY_REQUIRED, _MEMORY_OPTIONAL)
    measured = level.get("measured_bandwidth")
    accesses = {"read": 2.0, "write": 1.0}
    if "accesses_per_cycle" in level:
        given = check.mapping(level["accesses_per_cycle"], f"{path}.accesses_per_cycle", ("read", "write"), ())
        for key in ("read", "write"):
            value = given[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                check.fail(f"{path}.accesses_per_cycle.{key}", "a number of word accesses >= 0", value)
            accesses[key] = float(value)
    return MemoryLevel(
        name=check.string(level["name"], f"{path}.name"),
        capacity_bytes=check.quantity(level["capacity"], f"{path}.capacity", "bytes"),
        instances=check.positive_int(level["instances"], f"{path}.instances"),
        bandwidth_bytes_per_s=check.quantity(level["bandwidth"], f"{path}.bandwidth", "bandwidth"),
        read_energy_j_per_byte=check.quantity(level["read_energy"], f"{path}.read_energy", "energy_per_byte", word_bytes),
        write_energy_j_per_byte=check.quantity(level["write_energy"], f"{path}.write_energy", "energy_per_byte", word_bytes),
        measured_bandwidth_bytes_per_s=None if measured is None else check.quantity(measured, f"{path}.measured_bandwidth", "bandwidth"),
        notes=str(level.get("notes", "")),
        reads_per_cycle=accesses["read"],
        writes_per_cycle=accesses["write"],
    )


def _check_peaks(check: "_Checker", target: Target) -> None:
    """Every stated peak against the one the counts imply (ops_per_cycle x count x parallel
    units x clock): beyond PEAK_RATIO_LIMIT either way, a count is per chip where it should be per
    parallel unit (or the reverse)."""
    for unit in target.compute_units.values():
        for field, peaks in (("datasheet_peak", unit.datasheet_peak), ("measured_peak", unit.measured_peak)):
            for dtype, peak in peaks.items():
                if dtype not in unit.ops_per_cycle or peak <= 0:
                    continue
                derived = target.derived_peak(unit, dtype)
                if not 1 / PEAK_RATIO_LIMIT <= derived / peak <= PEAK_RATIO_LIMIT:
                    check.fail(f"compute.{unit.name}.{field}.{dtype}",
                               f"a peak near the {derived:.3g} ops/s its counts imply ({unit.ops_per_cycle[dtype]:g} "
                               f"ops/cycle x {unit.count} per {target.parallel_unit_name} x {target.parallel_units} "
                               f"{target.parallel_unit_name}s x {target.clock_hz / 1e9:.3g} GHz; counts are per "
                               f"{target.parallel_unit_name})", f"{peak:.3g} ops/s")


class _Checker:
    """Field checks that raise SpecError('file: path: expected ..., got ...')."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, expected: str, got: Any) -> None:
        where = f"{self.source}: {path}: " if path else f"{self.source}: "
        raise SpecError(f"{where}expected {expected}, got {brief(got)}")

    def mapping(self, doc: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
        if not isinstance(doc, dict):
            self.fail(path, "a mapping", doc)
        prefix = f"{path}." if path else ""
        for key in doc:
            if key not in required and key not in optional:
                allowed = ", ".join(required + optional)
                raise SpecError(f"{self.source}: {prefix}{key}: expected one of the known fields ({allowed}), got unknown field {brief(key)}{did_you_mean(key, required + optional)}")
        for key in required:
            if key not in doc:
                raise SpecError(f"{self.source}: {prefix}{key}: expected this required field, got nothing (missing)")
        return doc

    def string(self, value: Any, path: str, allow_empty: bool = False) -> str:
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            self.fail(path, "a non-empty string" if not allow_empty else "a string", value)
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.fail(path, "one of " + ", ".join(repr(c) for c in choices), value)
        return value

    def positive_int(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(path, "a positive integer", value)
        if value > MAX_COUNT:  # 1e45 SMs is a typo, and its products overflow the model's floats
            self.fail(path, f"a positive integer up to {MAX_COUNT}", value)
        return value

    def positive_number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
            self.fail(path, "a positive number", value)
        return float(value)

    def quantity(self, value: Any, path: str, kind: str, word_bytes: int | None = None) -> float:
        what, example = units.KINDS[kind]
        try:
            parsed = units.parse_energy_per_byte(value, word_bytes) if kind == "energy_per_byte" else units.parse_quantity(value, kind)
        except ValueError:
            self.fail(path, f"{what} such as {example}", value)
        non_negative = kind in ("energy", "energy_per_byte", "time")
        if parsed < 0 or (parsed == 0 and not non_negative):
            self.fail(path, f"{what} such as {example}", value)
        if kind in ("bandwidth", "frequency", "throughput") and isinstance(value, (int, float)):
            # a bare number has no unit: refuse rather than guess bytes/s or Hz
            self.fail(path, f"{what} with its unit, such as {example}", value)
        return parsed

    def dtype_table(self, doc: Any, path: str, parse: Callable[[Any, str], float], allow_empty: bool = False) -> dict[str, float]:
        if not isinstance(doc, dict) or (not doc and not allow_empty):
            self.fail(path, "a mapping of dtype -> value such as {bf16: ...}", doc)
        table = {}
        for dtype, value in doc.items():
            if dtype not in _DTYPES:
                self.fail(f"{path}.{dtype}", "a dtype key (" + ", ".join(_DTYPES) + ")", dtype)
            table[dtype] = parse(value, f"{path}.{dtype}")
        return table
