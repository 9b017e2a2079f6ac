"""The one YAML reader (einsim.yamlio): every spec file's bad bytes, bombs and silent overrides are
named errors before anything big is built."""

from __future__ import annotations

import codecs
import time
from pathlib import Path

import pytest

from einsim.einsum_cascades import load_cascade
from einsim.errors import SpecError, brief, did_you_mean
from einsim.targets import load_target
from einsim.targets.loader import PRESET_DIR
from einsim.yamlio import MAX_YAML_BYTES, MAX_YAML_DEPTH, load_yaml, read_yaml_file

H100 = (PRESET_DIR / "h100-sxm.yaml").read_text()


def _bomb(levels: int = 9) -> str:
    """`levels` anchors, each a list of nine aliases of the one before: 9**levels strings."""
    lines = ['  - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_a_repeated_key_names_both_lines_instead_of_the_last_one_winning(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(H100.replace("clock: 1.98 GHz\n", "clock: 1.98 GHz\nclock: 100 MHz\n"))
    line = H100.splitlines().index("clock: 1.98 GHz") + 1
    with pytest.raises(SpecError, match=rf"t.yaml:{line + 1}:1: .*key 'clock' appears twice \(first on line {line}\)"):
        load_target(str(path))


def test_an_alias_bomb_is_refused_at_once_without_expanding_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(H100 + _bomb())
    started = time.perf_counter()
    with pytest.raises(SpecError, match=r"aliases expand to 44129616\d\d values") as error:
        load_target(str(path))
    assert time.perf_counter() - started < 2 and len(str(error.value)) < 300
    cascade = tmp_path / "bomb-cascade.yaml"
    text = (Path(__file__).parent.parent / "einsum_cascades/library/fusemax.yaml").read_text()
    cascade.write_text(text + "represents:\n" + _bomb() if "represents:" not in text
                       else text.replace("represents:", "represents_old:", 1) + "represents:\n" + _bomb())
    with pytest.raises(SpecError, match="alias bomb"):
        load_cascade(str(cascade))


@pytest.mark.parametrize("text, message", [
    ("a: &r [*r]\n", "expand for ever"),
    ("a: " + "[" * (MAX_YAML_DEPTH + 5) + "]" * (MAX_YAML_DEPTH + 5) + "\n", f"nested more than {MAX_YAML_DEPTH}"),
    ("a: " + "[" * 20000 + "]" * 20000 + "\n", "nested more than"),  # RecursionError before
    ("- &c0 [x]\n" + "".join(f"- &c{i} [*c{i - 1}]\n" for i in range(1, 100)), "levels deep"),
    ("a: " + "9" * 400 + "\n", "an integer of 400 digits"),  # OverflowError later, before
    ("a: " + "9" * 5000 + "\n", "an integer of 5000 digits"),  # ValueError (int str limit), before
    ("a: 1.0e+400\n", "beyond the largest float"),  # inf, then NaN downstream, before
    ("a: {b: 1, b: 2}\n", "key 'b' appears twice"),
])
def test_limits_of_the_yaml_reader(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_yaml(text, "x.yaml")


def test_explicit_infinity_is_left_to_the_field_checks() -> None:
    assert load_yaml("a: .inf\nb: -.inf\n", "x.yaml") == {"a": float("inf"), "b": float("-inf")}


@pytest.mark.parametrize("data, message", [
    (H100.encode("utf-16"), "the file is UTF-16: save it as UTF-8"),
    (codecs.BOM_UTF32_LE + H100.encode("utf-32-le"), "the file is UTF-32"),
    (b"name: caf\xe9\n", r"x.yaml:1:10: not UTF-8 \(byte 0xe9\)"),
    (b"x" * (MAX_YAML_BYTES + 1), "YAML specs are limited to"),
])
def test_files_that_are_not_utf8_or_too_big(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(data)
    with pytest.raises(SpecError, match=message):
        read_yaml_file(path, "x.yaml")


def test_a_utf8_bom_is_fine_and_a_folder_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(codecs.BOM_UTF8 + b"a: 1\n")
    assert read_yaml_file(path, "x.yaml") == {"a": 1}
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(SpecError, match="is a folder"):
        load_target(str(folder))
    with pytest.raises(SpecError, match="is a folder"):
        load_cascade(str(folder))


def test_echoed_values_are_brief_and_names_get_a_suggestion() -> None:
    looped: list = []
    looped.append(looped)
    assert len(brief(["x" * 10_000] * 10_000)) <= 120 and brief(looped).startswith("[[")
    assert brief(int("9" * 4000) ** 2) == "<int>"  # past Python's digit limit for str()
    assert did_you_mean("h10", ["a100-80gb", "h100-sxm", "h200"]) == " (did you mean 'h100-sxm'?)"
    assert did_you_mean("fusemx", ["flat", "fusemax"]) == " (did you mean 'fusemax'?)"
    assert did_you_mean("zzz", ["flat", "fusemax"]) == ""
    with pytest.raises(SpecError, match="did you mean 'h100-sxm'"):
        load_target("h100")
