"""The one reader of YAML spec files (targets, cascades, mappings, models): safe loading with stated
limits checked before anything big is built, and every problem as one named error line.

Limits (docs/reliability.md): a file of at most MAX_YAML_BYTES; nesting at most MAX_YAML_DEPTH
deep; at most MAX_YAML_NODES nodes once aliases are expanded (an alias bomb of a few hundred bytes
otherwise stands for billions of values, and any message or copy that walks it never ends);
integers of at most MAX_INT_DIGITS digits; no float that overflows to infinity (`1.0e400`); no key
twice in one mapping (the error names both lines: with PyYAML alone the last one silently wins);
UTF-8 text only (UTF-16/32 and other encodings are named, with the fix).
"""

from __future__ import annotations

import codecs
import math
from pathlib import Path
from typing import Any

import yaml

from einsim.errors import EinsimError, SpecError, brief
from einsim.files import path_kind

MAX_YAML_BYTES = 1 << 20  # 1 MiB: the largest shipped spec is ~10 KB
MAX_YAML_DEPTH = 64  # mappings and lists inside each other
MAX_YAML_NODES = 200_000  # scalars, lists and mappings, aliases expanded
MAX_INT_DIGITS = 24  # beyond any count, size or byte total a spec can mean (1e24)

_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
         (codecs.BOM_UTF16_BE, "UTF-16"))


class _YamlLimitError(yaml.YAMLError):
    """A limit broken while composing or constructing; carries the mark of the node at fault."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class LimitedSafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with a nesting limit while composing, and, while constructing, an
    error for a repeated key, an integer of more than MAX_INT_DIGITS digits and a float that
    overflows."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error below names it
                    continue
                if first is not None:
                    raise _YamlLimitError(f"key {brief(key)} appears twice (first on line {first.line + 1}): "
                                          f"delete one", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _YamlLimitError(f"an integer of {digits} digits: at most {MAX_INT_DIGITS} are read",
                                  node.start_mark)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: Any) -> float:
        value = super().construct_yaml_float(node)
        text = str(node.value).lower()
        if math.isinf(value) and "inf" not in text:
            raise _YamlLimitError(f"{brief(node.value)} is beyond the largest float (~1.8e308)", node.start_mark)
        return value


LimitedSafeLoader.add_constructor("tag:yaml.org,2002:int", LimitedSafeLoader.construct_yaml_int)
LimitedSafeLoader.add_constructor("tag:yaml.org,2002:float", LimitedSafeLoader.construct_yaml_float)


def yaml_error_message(shown: str, error: Exception) -> str:
    """One line `file:line:column: not valid YAML: problem` for a PyYAML error, whose own str()
    spans several lines and repeats the resolved path (the CLI prints one line per error)."""
    mark = getattr(error, "problem_mark", None)
    where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    return f"{where}: not valid YAML: {problem[:300]}"


def _expanded_shape(root: Any) -> tuple[float, float]:
    """(nodes, depth) of the document with every alias expanded, computed without expanding
    anything: an alias is the same node object, so each distinct node is measured once (post-order,
    iteratively). A recursive alias (`&a [*a]`) expands for ever: (inf, inf)."""
    measured: dict[int, tuple[float, float]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if not isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            measured[key] = (1, 1)
            continue
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            measured[key] = (min(1 + sum(measured[id(c)][0] for c in children), math.inf),
                             1 + max((measured[id(c)][1] for c in children), default=0))
            continue
        if key in measured:
            continue
        if key in open_nodes:
            return math.inf, math.inf
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                return math.inf, math.inf
            if id(child) not in measured:
                stack.append((child, False))
    return measured[id(root)]


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value)


def compose_yaml(text: str, source: str, error_type: type[EinsimError] = SpecError) -> Any:
    """The YAML text's node tree (marks kept for file:line:column messages), within the limits;
    None for an empty document."""
    if len(text) > MAX_YAML_BYTES:
        raise error_type(f"{source}: {len(text)} characters: YAML specs are limited to {MAX_YAML_BYTES} bytes")
    try:
        loader = LimitedSafeLoader(text)  # PyYAML's reader refuses control characters (NUL) here
    except yaml.YAMLError as error:
        raise error_type(yaml_error_message(source, error)) from None
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as error:
        raise error_type(yaml_error_message(source, error)) from None
    except RecursionError:
        raise error_type(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if root is not None:
        nodes, depth = _expanded_shape(root)
        if math.isinf(nodes):
            raise error_type(f"{source}: not valid YAML: an alias refers to the list or mapping it is in "
                             f"(it would expand for ever)")
        if nodes > MAX_YAML_NODES:
            raise error_type(f"{source}: not valid YAML: aliases expand to {brief(nodes)} values, more than "
                             f"{MAX_YAML_NODES} (an alias bomb?): write the values out, or use fewer aliases")
        if depth > MAX_YAML_DEPTH:
            raise error_type(f"{source}: not valid YAML: aliases nest values {depth} levels deep, more than "
                             f"{MAX_YAML_DEPTH}")
    return root


def construct_yaml(node: Any, source: str, error_type: type[EinsimError] = SpecError) -> Any:
    """The Python value of a node from compose_yaml (dicts, lists, scalars), with the
    constructor's checks: repeated keys, huge integers, overflowing floats."""
    constructor = LimitedSafeLoader("")
    try:
        return constructor.construct_document(node)
    except yaml.YAMLError as error:
        raise error_type(yaml_error_message(source, error)) from None
    finally:
        constructor.dispose()


def load_yaml(text: str, source: str, error_type: type[EinsimError] = SpecError) -> Any:
    """YAML text -> Python values, within the limits (see the module docstring)."""
    root = compose_yaml(text, source, error_type)
    return None if root is None else construct_yaml(root, source, error_type)


def read_yaml_text(path: str | Path, shown: str, error_type: type[EinsimError] = SpecError) -> str:
    """A spec file's text: a folder, a file over MAX_YAML_BYTES, UTF-16/32 or any bytes that are
    not UTF-8 become one `error_type` line naming `shown` and the fix."""
    path = Path(path)
    kind = path_kind(path)
    if kind == "folder":
        raise error_type(f"{shown}: is a folder, not a YAML file")
    if kind == "unusable":
        raise error_type(f"{brief(shown)}: not a usable file name (too long, or a character the file system refuses)")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error_type(f"{shown}: {size} bytes: YAML specs are limited to {MAX_YAML_BYTES} bytes")
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as error:
        raise error_type(f"{shown}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_YAML_BYTES:
        raise error_type(f"{shown}: more than {MAX_YAML_BYTES} bytes: YAML specs are limited to that")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise error_type(f"{shown}: the file is {encoding}: save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise error_type(f"{shown}:{line}:{column}: not UTF-8 (byte 0x{data[error.start]:02x}): save the file "
                         f"as UTF-8") from None


def read_yaml_file(path: str | Path, shown: str, error_type: type[EinsimError] = SpecError) -> Any:
    """Every einsim YAML spec file (targets, models, mappings) is read here: read_yaml_text, then
    load_yaml; an unreadable, malformed or oversized file becomes one `error_type` line naming
    `shown`."""
    return load_yaml(read_yaml_text(path, shown, error_type), shown, error_type)
