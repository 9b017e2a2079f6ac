"""Every option of every `einsim` subcommand explains itself: a test walks the whole parser tree,
so an option added without help text fails here rather than in a user's terminal."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from einsim.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


PARSERS = list(_walk(build_parser(), ("einsim",)))


def test_the_walk_reaches_nested_subcommands() -> None:
    paths = {" ".join(path) for path, _ in PARSERS}
    assert {"einsim sweep", "einsim plot speedup", "einsim kernels list", "einsim autotune"} <= paths


@pytest.mark.parametrize("path,parser", PARSERS, ids=[" ".join(p) for p, _ in PARSERS])
def test_every_option_has_help(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    missing = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if isinstance(action, argparse._SubParsersAction):
            missing += [f"subcommand {name}" for name, sub in action.choices.items()
                        if not any(choice.dest == name and choice.help for choice in action._choices_actions)]
            continue
        # SUPPRESS is a deliberate choice: options only the tool itself passes (spawned workers).
        if not action.help or not action.help.strip():
            missing.append("/".join(action.option_strings) or action.dest)
    assert not missing, f"{' '.join(path)}: no help text for {', '.join(missing)}"
    parser.format_help()  # and every help string formats (no stray %-placeholders)
