"""Fuzzing the spec files and the Einsum notation: targets, models and mappings with fields deleted,
replaced by hostile values or added; cascades with Einsums rewritten from the notation's own
tokens. Each loads or raises a named einsim error (tests/fuzz_support.py); what loads is then
used (simulated, executed on tiny random inputs) under the same rule."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from fuzz_support import FUZZ, LIBRARY, MODELS, PRESETS, bomb_text, check_api  # noqa: E402

from einsim.einsum_cascades import parse_cascade  # noqa: E402
from einsim.einsum_cascades.executor import execute  # noqa: E402
from einsim.einsum_cascades.passes import analyze_passes  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.simulator.mapping import load_mapping  # noqa: E402
from einsim.simulator.models import load_model  # noqa: E402
from einsim.simulator.simulate import simulate  # noqa: E402
from einsim.targets import load_target  # noqa: E402

# Values a field should never choke on. Quantities with units, numbers, containers, text.
HOSTILE_VALUES = (None, True, 0, -1, 1, 3, 1.5, -0.0, 10**18, 10**24, float("inf"), float("nan"), 1e300, "", "x",
                  "1e400 GHz", "-3 TB/s", "0 B", "1e300 GiB", "12 parsecs", "nan GHz", "inf pJ", "1.98", "1.98 GHz",
                  "228 KiB", "3.35 TB/s", "989 TFLOP/s", "0.5 pJ", [], [1, 2], {}, {"a": 1}, ["x"] * 3, "a" * 2000,
                  {"bf16": "1e45 TFLOP/s"}, {"bf16": -1}, {"fp64": 1})

PROBLEM = Problem(batch=1, q_heads=4, kv_heads=2, q_len=128, kv_len=512, head_dim=64, causal=True)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a YAML document (keys and list positions)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` after one to three edits: a value replaced, a key removed, a key added."""
    import copy

    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        if not paths:
            return copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
        path = draw(st.sampled_from(paths))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(("replace", "replace", "remove", "add")))
        if action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
        elif action == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(("extra", "count", "name", "kind", "bf16")))] = copy.deepcopy(draw(
                st.sampled_from(HOSTILE_VALUES)))
    return document


def _write(folder: Path, name: str, document: Any) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False))
    return path


TARGET_DOCS = {name: yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
               for name in ("h100-sxm", "fusemax-cloud", "flat-edge")}
MODEL_DOC = yaml.safe_load((MODELS / "llama3-8b.yaml").read_text())
MAPPING_DOC = {"dataflow": "fusemax", "key_tile": 64, "query_tile": 32, "query_block": 256, "schedule": "pipelined",
               "spill": "store", "binding": {"style": "fusemax"}, "staging": "fused", "buffering": "double",
               "stationarity": {"QK": "output"}}


@hypothesis.settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_fuzz_target_files(tmp_path: Path, data) -> None:
    name = data.draw(st.sampled_from(sorted(TARGET_DOCS)))
    path = _write(tmp_path, "target.yaml", data.draw(mutated(TARGET_DOCS[name])))
    target = check_api(lambda: load_target(str(path)))
    if target is not None:  # what loads must also simulate (or refuse by name)
        cascade = "fusemax" if target.kind == "spatial" else "attention-1pass"
        check_api(lambda: simulate(cascade, PROBLEM, target))


@hypothesis.settings(FUZZ, max_examples=30)
@given(document=mutated(MODEL_DOC))
def test_fuzz_model_files(tmp_path: Path, document: Any) -> None:
    path = _write(tmp_path, "model.yaml", document)
    model = check_api(lambda: load_model(str(path)))
    if model is not None:
        problem = check_api(lambda: model.problem(1024, "prefill"))
        if problem is not None:
            check_api(lambda: simulate("fusemax", problem, "fusemax-cloud"))


@hypothesis.settings(FUZZ, max_examples=30)
@given(document=mutated(MAPPING_DOC))
def test_fuzz_mapping_files(tmp_path: Path, document: Any) -> None:
    path = _write(tmp_path, "mapping.yaml", document)
    mapping = check_api(lambda: load_mapping(str(path)))
    if mapping is not None:
        check_api(lambda: simulate("fusemax", PROBLEM, "fusemax-cloud", mapping))
        check_api(lambda: simulate("attention-1pass", PROBLEM, "h100-sxm", mapping))


# -- Einsum text ------------------------------------------------------------------------------

ONE_PASS = (LIBRARY / "attention-1pass.yaml").read_text()
EINSUM_LINES = [line for line in ONE_PASS.splitlines() if line.startswith("  - ")]
TOKENS = ("QK", "RM", "RD", "RO", "SLN", "V", "K", "Q", "LM", "AV", "X", "[", "]", "[b,h,m1,m0,p]", "[b,h,f,p]",
          "[b,h,m1+1,p]", "[b,h,m1,p]", "[b,h,f,m1,m0]", "[b,h,e,p]", "b", "h", "m1", "m0", "p", "f", "e", "M1", "M0",
          "m1+1", "m1-1", "m1+2", ",", " = ", "=", " * ", " + ", " - ", " / ", "-", "(", ")", "exp(", "max(", "max(m0) ",
          "sum(f) ", "min(", "0", "1", "2.5", "999999", "-inf", "inf", "1e400", "nan", "M", "P", "#", ":", "'", "\"",
          "é", "\\", "\x00", "  ", "if", " and ", " or ", "not ", " <= ", " < ", " == ")


INDEX_SWAPS = ("m1", "m0", "p", "f", "e", "b", "h", "m1+1", "m1-1", "m0+1", "0", "1", "3", "15", "16", "999999",
               "M1", "M0", "P", "F", "x", "m")
OPERATOR_SWAPS = (" + ", " - ", " * ", " / ")
APPENDS = (" * 2", " / 0", " / 2", " - inf", " + 1e400", " * nan", " + V[b,h,f,m1,m0]", " + K[b,h,e,15]",
           " / RD[b,h,m1,p]", " + exp(QK[b,h,m1,m0,p])")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[+-]\d+)?|\d+(?:\.\d+)?|\s*[-+*/]\s*|.", re.S)


@st.composite
def einsum_text(draw: st.DrawFn, position: int) -> str:
    """The cascade's Einsum at `position` with a token or two swapped for one of its kind (an index
    for an index, an operator for an operator) or a term appended, so the cascade usually still
    loads and execution is fuzzed too; sometimes a line of raw notation tokens."""
    line = EINSUM_LINES[position][4:].split("#")[0].rstrip()
    if not draw(st.integers(0, 5)):
        return "".join(draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14)))
    left, _, right = line.partition("=")
    tokens = _TOKEN.findall(right)
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.integers(0, 3)) == 0:
            tokens.append(draw(st.sampled_from(APPENDS)))
            continue
        inside = [i for i, t in enumerate(tokens) if re.fullmatch(r"[a-z][a-z0-9]*(?:[+-]\d+)?|\d+|[A-Z]\d?", t)
                  and "[" in "".join(tokens[:i]).rsplit("]", 1)[-1]]
        operators = [i for i, t in enumerate(tokens) if t.strip() in ("+", "-", "*", "/")]
        choices = [("index", i) for i in inside] + [("op", i) for i in operators]
        if not choices:
            tokens.append(draw(st.sampled_from(APPENDS)))
            continue
        kind, i = draw(st.sampled_from(choices))
        tokens[i] = draw(st.sampled_from(INDEX_SWAPS if kind == "index" else OPERATOR_SWAPS))
    return f"{left}={''.join(tokens)}"


RNG = np.random.default_rng(0)
INPUTS = {"Q": RNG.standard_normal((1, 1, 64, 3)), "K": RNG.standard_normal((1, 1, 64, 5)),
          "V": RNG.standard_normal((1, 1, 64, 5))}


@hypothesis.settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_fuzz_einsum_text(data) -> None:
    """One Einsum of a working cascade edited: loads or is a named error, and what loads is
    analysed and executed (float64, tiny sizes) or refused by name."""
    position = data.draw(st.integers(0, len(EINSUM_LINES) - 1))
    line = data.draw(einsum_text(position))
    lines = ONE_PASS.splitlines()
    index = [i for i, text in enumerate(lines) if text.startswith("  - ")][position]
    quoted = "'" + line.replace("'", "''") + "'"
    text = "\n".join(lines[:index] + [f"  - {quoted}"] + lines[index + 1:]) + "\n"
    cascade = check_api(lambda: parse_cascade(text, "fuzz.yaml"))
    if cascade is not None:
        check_api(lambda: analyze_passes(cascade))
        check_api(lambda: execute(cascade, INPUTS, {"block_m": 2}))


@hypothesis.settings(FUZZ, max_examples=40)
@given(edits=st.lists(st.tuples(st.sampled_from(("name", "ranks", "symbols", "partitions", "inputs", "init",
                                                 "outputs", "filters", "einsums")),
                                st.sampled_from(("[]", "{}", "x", "-1", "0", "[AV, AV]", "{M: 0}", "{M: -5}",
                                                 "{M: 1e400}", "{batch: 99999999999}", "[Q]", "{RM: nan}",
                                                 "{M: [M1, M1]}", "{Q: [B, H, E, E]}", "null", "[[]]",
                                                 "{M1: 16}", "{E: 'head_dim * head_dim'}"))),
                      min_size=1, max_size=3))
def test_fuzz_cascade_fields(edits: list[tuple[str, str]]) -> None:
    """Top-level fields of a cascade replaced by hostile YAML."""
    lines = ONE_PASS.splitlines()
    for field, value in edits:
        lines = [f"{field}: {value}" if line.startswith(f"{field}:") else line for line in lines]
        if not any(line.startswith(f"{field}:") for line in lines):
            lines.append(f"{field}: {value}")
    text = "\n".join(line for line in lines if not (line.startswith("  - ") and any(
        e[0] == "einsums" for e in edits))) + "\n"
    cascade = check_api(lambda: parse_cascade(text, "fuzz.yaml"))
    if cascade is not None:
        check_api(lambda: execute(cascade, INPUTS, {"block_m": 2}))
        check_api(lambda: simulate(cascade, PROBLEM, "fusemax-cloud"))


def test_bombs_in_every_spec_kind(tmp_path: Path) -> None:
    """The alias bomb and a deep nest in each kind of file: refused by name, at once."""
    for reader, name in ((load_target, "t.yaml"), (load_model, "m.yaml"), (load_mapping, "p.yaml")):
        for text in (bomb_text(), "a: " + "[" * 5000 + "]" * 5000 + "\n"):
            path = tmp_path / name
            path.write_text(text)
            assert check_api(lambda: reader(str(path))) is None
    for text in (ONE_PASS + bomb_text().replace("bomb:", "represents:"),):
        assert check_api(lambda: parse_cascade(text.replace("represents: [FlashAttention]\n", ""), "c.yaml")) is None


def test_every_library_cascade_and_preset_loads() -> None:
    """The fuzzers start from these: they must load and simulate cleanly themselves."""
    for cascade, target in itertools.product(("fusemax", "attention-1pass"), ("fusemax-cloud", "h100-sxm")):
        assert check_api(lambda: simulate(cascade, PROBLEM, target)) is not None
