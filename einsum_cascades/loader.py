"""Cascade YAML -> Cascade: the one loader, which checks every field and every Einsum and names the
file, line and column (syntax) or the Einsum (meaning) of whatever is wrong."""

# size: one class, _Builder, turns one YAML document into a Cascade; its readers and checks share the
# document's ranks, symbols and error locations (file:line:column), so they stay together (~470 lines)
from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import networkx as nx
import yaml

from einsim.einsum_cascades.expr import (
    SIZE_ONLY_FUNCTIONS, Access, Binary, Call, Coordinate, Name, Number, Unary, transform, walk,
)
from einsim.einsum_cascades.ir import (
    Cascade, Einsum, Filter, accesses, coordinates, map_operations, resolve_access,
)
from einsim.einsum_cascades.parser import (
    KEYWORDS, Location, ParsedEinsum, parse_condition, parse_einsum_text, parse_size,
)
from einsim.einsum_cascades.space import Space, index_var
from einsim.errors import SpecError, brief, did_you_mean
from einsim.files import exists
from einsim.yamlio import LimitedSafeLoader, compose_yaml, read_yaml_text

_RANK = re.compile(r"^[A-Z][A-Z0-9]*$")
_TENSOR = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SYMBOL = re.compile(r"^[a-z_][a-z0-9_]*$")
# Functions a filter may use: integer-valued over coordinates.
_FILTER_FUNCTIONS = ("abs", "max", "min", "floor", "mod")
_KEYS = ("name", "description", "represents", "ranks", "symbols", "partitions", "inputs", "init",
         "filters", "einsums", "outputs")


def _is_zero(node) -> bool:
    """A literal 0 (or -0): division by it gave zeros (numpy's x/0 under errstate), silently."""
    while isinstance(node, Unary):
        node = node.operand
    return isinstance(node, Number) and node.value == 0


def library_dir() -> Path:
    return Path(str(resources.files("einsim.einsum_cascades") / "library"))


def library_names() -> list[str]:
    """Names of the cascades shipped in einsum_cascades/library/, sorted."""
    return sorted(path.stem for path in library_dir().glob("*.yaml"))


def load_cascade(name_or_path: str | Path) -> Cascade:
    """A library cascade by name (`fusemax`) or any cascade YAML file by path."""
    if not isinstance(name_or_path, (str, Path)):
        raise SpecError(f"cascade: expected a library name or a path to a cascade YAML, got {brief(name_or_path)}")
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not exists(path):
        candidate = library_dir() / f"{name_or_path}.yaml"
        if not exists(candidate):
            if path.suffix in (".yaml", ".yml"):
                raise SpecError(f"{name_or_path}: no such file")
            raise SpecError(
                f"no cascade named {brief(str(name_or_path))}{did_you_mean(name_or_path, library_names())}; "
                f"library cascades: {', '.join(library_names())}"
            )
        path = candidate
    return parse_cascade(read_yaml_text(path, str(name_or_path)), source=str(path))


def parse_cascade(text: str, source: str = "<string>") -> Cascade:
    """A cascade from YAML text; `source` names it in error messages."""
    root = compose_yaml(text, source)
    if root is None or not isinstance(root, yaml.MappingNode):
        raise SpecError(f"{source}:1:1: expected a mapping with name, ranks, inputs, einsums, outputs")
    return _Builder(source, text).build(root)


class _Parsed(NamedTuple):
    """One Einsum line as parsed, before its meaning is checked."""

    ast: ParsedEinsum
    text: str  # stripped, for messages
    location: Location
    raw: str  # as written: the parser's columns index into it


class _Builder:
    def __init__(self, source: str, text: str):
        self.source, self.text = source, text
        self.constructor = LimitedSafeLoader("")

    # --- YAML helpers -----------------------------------------------------------------------
    def at(self, node) -> str:
        return f"{self.source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"

    def value(self, node):
        return self.constructor.construct_object(node, deep=True)

    def mapping(self, node, field: str) -> dict[str, tuple]:
        if not isinstance(node, yaml.MappingNode):
            raise SpecError(f"{self.at(node)}: {field}: expected a mapping, got {brief(self.value(node))}")
        found = {}
        for key, value in node.value:
            name = self.value(key)
            if not isinstance(name, str):
                raise SpecError(f"{self.at(key)}: {field}: expected names as keys, got {brief(name)}")
            if name in found:
                raise SpecError(f"{self.at(key)}: {field}: {name} appears twice")
            found[name] = (key, value)
        return found

    def sequence(self, node, field: str) -> list:
        if not isinstance(node, yaml.SequenceNode):
            raise SpecError(f"{self.at(node)}: {field}: expected a list, got {brief(self.value(node))}")
        return list(node.value)

    def string(self, node, field: str) -> str:
        value = self.value(node)
        if not isinstance(value, str):
            raise SpecError(f"{self.at(node)}: {field}: expected text, got {brief(value)}")
        return value

    def location(self, node) -> Location:
        # Column of the first character of the scalar's text (after an opening quote).
        offset = 1 if getattr(node, "style", None) in ("'", '"') else 0
        return Location(self.source, node.start_mark.line + 1, node.start_mark.column + 1 + offset)

    # --- the document -----------------------------------------------------------------------
    def build(self, root) -> Cascade:
        fields = self.mapping(root, "cascade")
        for key, (key_node, _) in fields.items():
            if key not in _KEYS:
                raise SpecError(f"{self.at(key_node)}: unknown field {key!r}; expected one of {', '.join(_KEYS)}")
        for required in ("name", "ranks", "inputs", "einsums", "outputs"):
            if required not in fields:
                raise SpecError(f"{self.source}:1:1: missing field {required!r}")
        self.name = self.string(fields["name"][1], "name")
        description = self.string(fields["description"][1], "description").strip() if "description" in fields else ""
        represents = ()
        if "represents" in fields:
            represents = tuple(self.string(n, "represents[]") for n in self.sequence(fields["represents"][1], "represents"))

        self.ranks, self.size_exprs = self.read_ranks(fields["ranks"][1])
        self.symbols = self.read_symbols(fields["symbols"][1]) if "symbols" in fields else {}
        self.partitions = self.read_partitions(fields["partitions"][1]) if "partitions" in fields else {}
        self.known_symbols = set(self.symbols)
        for expr in self.size_exprs.values():
            self.known_symbols |= {n.name for n in walk(expr) if isinstance(n, Name) and n.name not in self.ranks}
        for symbol in sorted(self.known_symbols):
            if symbol.upper() in self.ranks or symbol in KEYWORDS:
                what = f"the index variable of rank {symbol.upper()}" if symbol.upper() in self.ranks else "a keyword"
                raise SpecError(f"{self.source}: symbol {symbol!r} is {what}; rename the symbol")
        self.space = Space(self.name, dict(self.ranks), dict(self.partitions), dict(self.symbols), dict(self.size_exprs))
        self.inputs = self.read_inputs(fields["inputs"][1])
        self.init_nodes = {}
        self.init = self.read_init(fields["init"][1]) if "init" in fields else {}
        filters = ()
        if "filters" in fields:
            filters = tuple(self.read_filter(n, None) for n in self.sequence(fields["filters"][1], "filters"))
        self.cascade_filters = filters

        einsum_nodes = self.sequence(fields["einsums"][1], "einsums")
        if not einsum_nodes:
            raise SpecError(f"{self.at(fields['einsums'][1])}: einsums: expected at least one Einsum")
        parsed = [self.parse_einsum(node) for node in einsum_nodes]
        self.tensor_ranks = dict(self.inputs)
        producers: dict[str, tuple] = {}
        for node, einsum in zip(einsum_nodes, parsed):
            name = einsum[0].output.tensor
            if name in self.inputs:
                raise SpecError(f"{self.where(einsum)}: {name} is an input and cannot be produced by an Einsum")
            if name in producers:
                raise SpecError(
                    f"{self.where(einsum)}: {name} is already produced at line {producers[name][2].line}"
                )
            producers[name] = einsum
            self.tensor_ranks[name] = tuple(i.name.upper() for i in einsum[0].output.indices)
        self.iterative = {}
        for einsum in parsed:
            out = einsum[0].output
            offsets = [i for i in out.indices if i.offset]
            if offsets:
                self.iterative[out.tensor] = offsets[0].name.upper()
        einsums = tuple(self.check_einsum(p) for p in parsed)
        for name, key_node in self.init_nodes.items():
            if name not in self.iterative:
                raise SpecError(f"{self.at(key_node)}: init.{name}: {name} is not written at [r+1] by any Einsum, so it has no initial state")

        outputs_node = fields["outputs"][1]
        outputs = tuple(self.string(n, "outputs[]") for n in self.sequence(outputs_node, "outputs"))
        if not outputs:
            raise SpecError(f"{self.at(outputs_node)}: outputs: expected at least one tensor an Einsum produces")
        for node, name in zip(outputs_node.value, outputs):
            if name not in producers:
                raise SpecError(f"{self.at(node)}: outputs: {name} is never produced by an Einsum")
        self.check_cycles(einsums)
        self.check_everything_is_used(einsums, fields)
        return Cascade(
            name=self.name, description=description, ranks=dict(self.ranks), inputs=self.inputs,
            outputs=outputs, einsums=einsums, partitions=dict(self.partitions), filters=filters,
            symbols=dict(self.symbols), represents=represents, source=self.source, space=self.space,
        )

    def read_ranks(self, node):
        ranks, exprs = {}, {}
        for name, (key, value_node) in self.mapping(node, "ranks").items():
            if not _RANK.match(name):
                raise SpecError(f"{self.at(key)}: ranks: expected a rank name in capitals (M, M1, E), got {brief(name)}")
            value = self.value(value_node)
            if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, int) and value <= 0):
                raise SpecError(f"{self.at(value_node)}: ranks.{name}: expected a positive integer, a symbol or a size expression, got {brief(value)}")
            ranks[name] = value
            if isinstance(value, str):
                exprs[name] = parse_size(value, self.location(value_node))
        lowered = {}
        for name in ranks:
            if name.lower() in lowered:
                raise SpecError(f"{self.source}: ranks: {name} and {lowered[name.lower()]} share the index variable {name.lower()}")
            lowered[name.lower()] = name
        return ranks, exprs

    def read_symbols(self, node):
        symbols = {}
        for name, (key, value_node) in self.mapping(node, "symbols").items():
            value = self.value(value_node)
            if not _SYMBOL.match(name):
                raise SpecError(f"{self.at(key)}: symbols: expected a lower-case symbol name, got {brief(name)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SpecError(f"{self.at(value_node)}: symbols.{name}: expected a number as default (an integer for a size), got {brief(value)}")
            symbols[name] = value
        return symbols

    def read_partitions(self, node):
        partitions = {}
        for parent, (key, value_node) in self.mapping(node, "partitions").items():
            if parent not in self.ranks:
                raise SpecError(f"{self.at(key)}: partitions: {parent} is not a declared rank")
            parts = [self.string(n, f"partitions.{parent}[]") for n in self.sequence(value_node, f"partitions.{parent}")]
            if len(parts) < 2:
                raise SpecError(f"{self.at(value_node)}: partitions.{parent}: expected at least two parts, e.g. [{parent}1, {parent}0]")
            missing = [p for p in parts if p not in self.ranks]
            for part in parts:
                if not _RANK.match(part):
                    raise SpecError(f"{self.at(value_node)}: partitions.{parent}: expected rank names in capitals, got {brief(part)}")
                if any(part in other for other in partitions.values()) or part == parent:
                    raise SpecError(f"{self.at(value_node)}: partitions.{parent}: {part} is already part of another partition")
            if len(missing) > 1:
                raise SpecError(
                    f"{self.at(value_node)}: partitions.{parent}: give the size of all parts but one in ranks "
                    f"(the tile size, e.g. M0: block_m); {', '.join(missing)} have none"
                )
            if missing:
                derived = missing[0]
                others = [p for p in parts if p != derived]
                text = f"ceil({parent}/{'/'.join(others)})" if len(others) == 1 else f"ceil({parent}/({'*'.join(others)}))"
                self.ranks[derived] = text
                self.size_exprs[derived] = parse_size(text)
            partitions[parent] = tuple(parts)
        return partitions

    def read_inputs(self, node):
        inputs = {}
        for name, (key, value_node) in self.mapping(node, "inputs").items():
            if not _TENSOR.match(name):
                raise SpecError(f"{self.at(key)}: inputs: expected a tensor name, got {brief(name)}")
            ranks = tuple(self.string(n, f"inputs.{name}[]") for n in self.sequence(value_node, f"inputs.{name}"))
            for rank in ranks:
                if rank not in self.ranks:
                    raise SpecError(f"{self.at(value_node)}: inputs.{name}: unknown rank {brief(rank)}; declared: {', '.join(self.ranks)}")
            if len(set(ranks)) != len(ranks):
                raise SpecError(f"{self.at(value_node)}: inputs.{name}: a rank appears twice")
            inputs[name] = ranks
        return inputs

    def read_init(self, node):
        init = {}
        for name, (key, value_node) in self.mapping(node, "init").items():
            self.init_nodes[name] = key
            value = self.value(value_node)
            if isinstance(value, str):  # -inf is a string to YAML (its own spelling is -.inf)
                try:
                    value = float(value)
                except ValueError:
                    value = None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"{self.at(value_node)}: init.{name}: expected a number (or -inf), got {brief(self.value(value_node))}")
            init[name] = float(value)
        return init

    def read_filter(self, node, einsum_vars) -> Filter:
        text = self.string(node, "filters[]")
        condition = parse_condition(text, self.location(node))
        return self.make_filter(text, condition, node.start_mark.line + 1, None)

    def make_filter(self, text, condition, line, where) -> Filter:
        prefix = where or f"{self.source}:{line}: filter {text.strip()!r}"
        condition = self.resolve_names(condition, prefix)
        ranks = list(coordinates(condition))
        tensors = []
        for node in walk(condition):
            if isinstance(node, Access):
                if node.tensor not in self.inputs:
                    raise SpecError(
                        f"{prefix}: {node} reads {node.tensor}, which is not an input; a filter may read input "
                        f"tensors only (inputs: {', '.join(self.inputs) or 'none'})"
                    )
                for index in node.indices:
                    if index.kind == "final" or index.offset:
                        raise SpecError(f"{prefix}: {node}: a filter reads an input at coordinates (b, p1) or integers, not at {index}")
                    if index.kind == "var":
                        self.rank_of(index.name, prefix)
                resolve_access(self.space, self.inputs[node.tensor], node, prefix)
                ranks += [i.name.upper() for i in node.indices if i.kind == "var"]
                tensors.append(node.tensor)
            if isinstance(node, Call) and node.func not in _FILTER_FUNCTIONS:
                raise SpecError(f"{prefix}: {node.func}() cannot be used in a filter ({', '.join(_FILTER_FUNCTIONS)} can)")
        tensors = tuple(dict.fromkeys(tensors))
        return Filter(text.strip(), condition, tuple(dict.fromkeys(ranks)), line, tensors,
                      tuple((t, self.inputs[t]) for t in tensors))

    def resolve_names(self, expr, prefix: str):
        """Bare names of a map or filter: the lower-case index variable of a declared rank is its
        coordinate (a Coordinate node); a rank in capitals or a declared symbol is a size."""

        def resolve(node):
            if not isinstance(node, Name):
                return None
            if node.name.islower() and node.name.upper() in self.ranks:
                return Coordinate(node.name.upper(), node.column)
            if node.name in self.ranks or node.name in self.known_symbols:
                return None
            raise SpecError(
                f"{prefix}: unknown name {node.name!r}: not the index variable of a declared rank (its "
                "coordinate), a rank size in capitals or a declared symbol; a tensor needs [indices]"
            )

        return transform(expr, resolve)

    # --- one Einsum -------------------------------------------------------------------------
    def parse_einsum(self, node):
        text = self.string(node, "einsums[]")
        location = self.location(node)
        return _Parsed(parse_einsum_text(text, location), text.strip(), location, text)

    def where(self, parsed) -> str:
        _, text, location, _ = parsed
        return f"{location.source}:{location.line}: Einsum {text!r}"

    def check_einsum(self, parsed) -> Einsum:
        ast, text, location, raw = parsed
        where = self.where(parsed)
        out = ast.output
        output_ranks = []
        iterative_rank = None
        for index in out.indices:
            if index.kind != "var":
                raise SpecError(f"{where}: output indices must be lower-case variables, got {index}")
            rank = self.rank_of(index.name, where)
            if rank in output_ranks:
                raise SpecError(f"{where}: index {index.name} appears twice on the output")
            if index.offset:
                if index.offset != 1 or iterative_rank:
                    raise SpecError(f"{where}: an iterative output is written at [r+1] along one rank, got {index}")
                iterative_rank = rank
            output_ranks.append(rank)
        if iterative_rank and out.tensor not in self.init:
            raise SpecError(f"{where}: {out.tensor} is iterative (written at [{index_var(iterative_rank)}+1]); give its initial value in init: {{{out.tensor}: ...}}")
        variables = list(output_ranks)
        operands = accesses(ast.expression)
        for access in operands:
            if access.tensor not in self.tensor_ranks:
                raise SpecError(f"{where}: tensor {access.tensor} is not an input and no Einsum produces it")
            for rank in self.match_access(access, where):
                if rank not in variables:
                    variables.append(rank)
        variables = self.without_derivable(variables, output_ranks)
        expression = self.resolve_names(ast.expression, where)
        for node in walk(expression):
            if isinstance(node, Binary) and node.op == "/" and _is_zero(node.right):
                raise SpecError(f"{where}: divides by the constant 0 ({node})")
            if isinstance(node, Call) and node.func in SIZE_ONLY_FUNCTIONS:
                raise SpecError(f"{where}: {node.func}() is for rank sizes, not for maps")
        available = self.space.derivable(set(variables))
        for rank in coordinates(expression):
            if rank not in available:
                raise SpecError(
                    f"{where}: the map reads the coordinate {index_var(rank)}, which this Einsum does not iterate "
                    f"(it iterates {', '.join(index_var(r) for r in variables) or 'nothing'})"
                )
        reduced = [r for r in variables if r not in output_ranks]
        reduce_op = ast.reduce_op
        if ast.reduce_vars is not None:
            written = [self.rank_of(v, where) for v in ast.reduce_vars]
            if set(written) != set(reduced):
                raise SpecError(
                    f"{where}: {reduce_op}({','.join(ast.reduce_vars)}) must list exactly the indices absent from "
                    f"the output ({','.join(index_var(r) for r in reduced) or 'none'})"
                )
        elif reduced:
            reduce_op = "sum"
        own_filters = ()
        if ast.condition is not None:
            where_text = raw[ast.condition_column:]
            own_filters = (self.make_filter(where_text, ast.condition, location.line, where),)
            for rank in own_filters[0].ranks:
                if rank not in available:
                    raise SpecError(f"{where}: the filter uses {index_var(rank)}, which this Einsum does not iterate")
        applicable = tuple(f for f in self.cascade_filters if f.ranks and all(r in available for r in f.ranks))
        return Einsum(
            output=out.tensor, output_ranks=tuple(output_ranks), output_indices=out.indices,
            expression=expression, operands=operands, map_ops=map_operations(expression),
            reduce_op=reduce_op, reduced_ranks=tuple(reduced), iteration_ranks=tuple(variables),
            filters=own_filters + applicable, iterative_rank=iterative_rank,
            init=self.init.get(out.tensor) if iterative_rank else None, text=text, line=location.line,
            source=self.source, space=self.space,
        )

    def without_derivable(self, variables: list[str], output_ranks: list[str]) -> list[str]:
        """Drop an iterated rank that follows from the others: reading BLOCKS[b,h,p1,m1] in an
        Einsum that iterates p does not iterate p1 as well, it reads p1 = p // P0."""
        variables = list(variables)
        changed = True
        while changed:
            changed = False
            for rank in variables:
                if rank not in output_ranks and rank in self.space.derivable(set(variables) - {rank}):
                    variables.remove(rank)
                    changed = True
                    break
        return variables

    def rank_of(self, variable: str, where: str) -> str:
        rank = variable.upper()
        if not variable.islower() or rank not in self.ranks:
            raise SpecError(f"{where}: index {variable} names no rank; declared ranks: {', '.join(self.ranks)}")
        return rank

    def match_access(self, access: Access, where: str) -> list[str]:
        """Check an access against its tensor's ranks; return the ranks its variables iterate."""
        for index in access.indices:
            if index.kind == "var":
                self.rank_of(index.name, where)
        reads = resolve_access(self.space, self.tensor_ranks[access.tensor], access, where)
        iterative = self.iterative.get(access.tensor)
        for read in reads:
            if read.offset and read.rank != iterative:
                raise SpecError(f"{where}: {access}: only an iterative tensor's own rank takes an offset")
            if read.offset not in (0, 1):
                raise SpecError(f"{where}: {access}: read a running state at [r] (before) or [r+1] (after), not with offset {read.offset}")
            if read.kind == "final" and read.rank != iterative:
                raise SpecError(
                    f"{where}: {access}: {read.rank} as an index means the final state of an iterative tensor; "
                    f"{access.tensor} is not iterative over {read.rank}"
                )
        return [i.name.upper() for i in access.indices if i.kind == "var"]

    def check_everything_is_used(self, einsums: tuple[Einsum, ...], fields) -> None:
        """An input no Einsum reads, or a cascade filter that applies to no Einsum, is a mistake
        (a misspelt rank, a forgotten term): name it instead of ignoring it."""
        read = {a.tensor for e in einsums for a in e.operands}
        read |= {t for e in einsums for f in e.filters for t in f.tensors}
        for name, (key, _) in self.mapping(fields["inputs"][1], "inputs").items():
            if name not in read:
                raise SpecError(f"{self.at(key)}: inputs.{name}: no Einsum or filter reads {name}; read it or remove it")
        if "filters" in fields:
            for node, flt in zip(self.sequence(fields["filters"][1], "filters"), self.cascade_filters):
                if not any(flt in e.filters for e in einsums):
                    needed = ", ".join(index_var(r) for r in flt.ranks) or "no coordinate"
                    raise SpecError(
                        f"{self.at(node)}: filters: {flt.text!r} applies to no Einsum: none iterates all of {needed}"
                    )

    def check_cycles(self, einsums: tuple[Einsum, ...]) -> None:
        graph = nx.DiGraph()
        by_output = {e.output: e for e in einsums}
        for einsum in einsums:
            graph.add_node(einsum.output)
            for access in einsum.operands:
                if access.tensor in by_output and not is_previous_state(access, by_output[access.tensor]):
                    graph.add_edge(access.tensor, einsum.output)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return
        first = by_output[cycle[0][1]]
        path = " -> ".join([cycle[0][0]] + [v for _, v in cycle])
        raise SpecError(
            f"{first.source}:{first.line}: Einsum {first.text!r}: the cascade has a cycle {path}; "
            "a running state reads its previous value at [r] and is written at [r+1]"
        )


def is_previous_state(access: Access, producer: Einsum) -> bool:
    """A read of an iterative tensor's state before the current step (RM[m1,p]) or its initial
    state (RM[0,p]): loop-carried, it orders nothing within the loop."""
    if producer.iterative_rank is None:
        return False
    for read in resolve_access(producer.space, producer.output_ranks, access):
        if read.rank == producer.iterative_rank:
            return (read.kind == "coord" and read.offset == 0) or read.kind == "const"
    return False
