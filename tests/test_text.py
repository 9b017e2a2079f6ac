"""Tables and prose as the command line prints them: fitted to 100 columns unless `--wide`, with
a note naming what was shortened or left out, and nothing changed when no width is asked."""

from __future__ import annotations

import pytest

from einsim.cli import main
from einsim.text import fit_text, render_table, table_width

HEADERS = ["name", "config", "description"]
ROWS = [["attention-fwd", "FlashConfig", "fused 1-pass forward: online softmax with deferred normalisation"],
        ["decode", "DecodeConfig", "split-KV decode: partial maxima, sums and numerators merged at the end"]]


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_without_a_width_nothing_changes() -> None:
    text = render_table(HEADERS, ROWS, shrink=["description"], drop=["config"])
    assert ROWS[1][2] in text and "config" in text and "--wide" not in text


def test_shrink_shortens_named_columns_and_says_so() -> None:
    with table_width(60):
        text = render_table(HEADERS, ROWS, shrink=["description"])
    table, note = text.rsplit("\n", 1)
    assert _width(table) <= 60 and "…" in table and "FlashConfig" in table
    assert note == "(to fit 60 columns: description shortened; --wide shows all)"


def test_wrap_keeps_every_word_on_continuation_lines() -> None:
    with table_width(60):
        text = render_table(HEADERS, ROWS, wrap=["description"])
    assert _width(text) <= 60 and "--wide" not in text  # nothing lost, nothing to say
    words = " ".join(line[len("attention-fwd  FlashConfig   "):].strip() for line in text.splitlines()[2:])
    for word in ROWS[0][2].split() + ROWS[1][2].split():
        assert word in words
    assert text.splitlines()[3].startswith(" " * 20)  # the continuation leaves the other columns blank


def test_drop_leaves_out_named_columns_in_order_when_shrinking_is_not_enough() -> None:
    with table_width(40):
        text = render_table(HEADERS, ROWS, shrink=["description"], drop=["config"])
    assert "FlashConfig" not in text and "config and" not in text
    assert _width(text.rsplit("\n(", 1)[0]) <= 40
    assert "description shortened, config left out" in " ".join(text.split())


def test_unnamed_columns_are_never_cut() -> None:
    with table_width(20):
        text = render_table(HEADERS, ROWS)
    assert ROWS[1][2] in text and "--wide" not in text  # wider than asked rather than wrong


def test_fit_text_wraps_prose_with_a_hanging_indent_and_keeps_long_tokens() -> None:
    path = "/a/very/long/path/" + "x" * 60 + ".yaml"
    with table_width(40):
        text = fit_text(f"note: the file {path} was read and the mapping was chosen again", "  ")
    lines = text.splitlines()
    assert all(line.startswith("  ") for line in lines[1:]) and path in text
    assert all(len(line) <= 40 for line in lines if path not in line)


@pytest.mark.parametrize("argv", [["kernels", "list"], ["targets", "list"], ["models", "list"],
                                  ["cascades", "list"], ["targets", "show", "h100-sxm"], ["simulate"]])
def test_commands_fit_100_columns_and_wide_prints_everything(argv: list[str], capsys) -> None:
    assert main(argv) == 0
    fitted = capsys.readouterr().out
    assert _width(fitted) <= 100, "\n".join(line for line in fitted.splitlines() if len(line) > 100)
    assert main([*argv, "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "--wide shows all" not in wide
    if "--wide shows all" in fitted:
        assert _width(wide) > 100


@pytest.mark.parametrize("argv", [["cascades", "tiles", "attention-causal", "--set", "kv_len=2048", "--set",
                                   "q_len=2048", "--block", "128x128"], ["plot", "passes", "fusemax"]])
def test_reports_fit_100_columns(argv: list[str], capsys) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _width(out) <= 100, "\n".join(line for line in out.splitlines() if len(line) > 100)
