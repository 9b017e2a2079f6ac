"""The `einsim` command: one entry point, one subcommand module per job.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its subcommand(s) and
sets `handler` (a function taking the parsed args and returning an exit status). Handlers are
thin shells over the Python API. Bad input (any EinsimError) is printed as one clear message and
exits with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from einsim.errors import EinsimError

# Order is the order of `einsim --help`.
COMMAND_MODULES = (
    "simulate",
    "sweep",
    "cascades",
    "passes",
    "targets",
    "models",
    "kernels",
    "autotune",
    "roofline",
    "plot",
)


def build_parser() -> argparse.ArgumentParser:
    from einsim import __version__

    parser = argparse.ArgumentParser(
        prog="einsim",
        description="Attention as cascades of Einsums: analyse passes, simulate on hardware "
        "targets, run and tune Triton kernels, plot rooflines.",
    )
    parser.add_argument("--version", action="version", version=f"einsim {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"einsim.cli.{name}")
        module.register(subparsers)
    return parser


OPTIONAL_STACK = ("torch", "triton")  # the `kernels` extra: commands that run kernels say to install it
MAX_MESSAGE = 2000  # characters of one error line; messages echo values briefly, this is the backstop


def _bounded(message: str) -> str:
    """One error line of at most MAX_MESSAGE characters, keeping its start (where) and its end
    (the fix)."""
    message = " ".join(message.split())
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE - 600]} ... {message[-500:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # no subcommand: the usage, on stderr (stdout stays for data), exit 2
        parser.print_help(sys.stderr)
        return 2
    from einsim.cli.output import check_output_arguments
    from einsim.text import TABLE_WIDTH, table_width

    try:
        check_output_arguments(args)
        with table_width(None if getattr(args, "wide", False) else TABLE_WIDTH):
            return int(handler(args) or 0)
    except EinsimError as error:
        print(f"einsim {args.command}: error: {_bounded(str(error))}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if error.name not in OPTIONAL_STACK:
            raise
        print(f"einsim {args.command}: error: this needs {error.name}, which is not installed: "
              f"`pip install 'einsim[kernels]'` (the simulator, the analysis, the plots and "
              f"`einsim autotune --dry-run` need neither torch nor triton)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`einsim ... | head`): not an error of ours.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"einsim {args.command}: interrupted", file=sys.stderr)
        return 130
