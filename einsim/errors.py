"""The errors einsim raises for bad input, shared by every subpackage.

Each message names where the problem is (file, line, field path or Einsum) and what would fix it;
the CLI prints it without a traceback and exits with status 2.
"""

import difflib
import reprlib
from typing import Iterable


class EinsimError(Exception):
    """Bad input from the user: a file, a field, a shape or a config that cannot be used."""


class SpecError(EinsimError):
    """A YAML spec (cascade, target, mapping, model) that is malformed or inconsistent.

    Messages read `path/to/file.yaml: field.path: expected ..., got ...`.
    """


class ShapeError(EinsimError):
    """Tensors or a workload shape that do not agree with what the operation needs."""


class ConfigError(EinsimError):
    """A kernel or mapping configuration that cannot run (does not fit, wrong constraint)."""


class EinsimWarning(UserWarning):
    """Something einsim recovered from but the user should know about: a corrupt cache file
    set aside, a dead tuning worker's trial failed, a wait that ran out."""


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxdict, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxset = 3, 6, 6, 6, 6
_BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 80, 80, 40


def brief(value: object, limit: int = 120) -> str:
    """`repr(value)` cut to about `limit` characters, for echoing bad input in a message: reprlib
    stops after a few items and levels, so a huge or self-referencing value costs nothing to
    show (an alias bomb's value repr'd in full ran for a minute and printed gigabytes)."""
    try:
        text = _BRIEF.repr(value)
    except Exception:  # an int past Python's 4300-digit str() limit, a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """' (did you mean 'h100-sxm'?)' when one known name starts with `name` or is close to it
    (difflib's ratio), else ''."""
    text, known = str(name)[:200], list(choices)
    starting = [choice for choice in known if text and choice.startswith(text)]
    close = starting if len(starting) == 1 else difflib.get_close_matches(text, known, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
