"""File-system questions about paths a user gave, answered without raising: a name too long for
the file system (ENAMETOOLONG), a NUL byte or a permission problem makes a path "unusable", never
an OSError traceback from `Path.exists()`. Bottom layer: every reader of user files asks here."""

from __future__ import annotations

import os
import stat


def path_kind(path: str | os.PathLike) -> str:
    """'file', 'folder', 'missing' (nothing there, or its folder is missing) or 'unusable' (the
    name cannot be looked up: too long, a NUL byte, no permission to look)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError):  # ENAMETOOLONG, ELOOP, EACCES; ValueError: embedded NUL byte
        return "unusable"
    if stat.S_ISDIR(mode):
        return "folder"
    return "file"


def is_file(path: str | os.PathLike) -> bool:
    return path_kind(path) == "file"


def is_folder(path: str | os.PathLike) -> bool:
    return path_kind(path) == "folder"


def exists(path: str | os.PathLike) -> bool:
    return path_kind(path) in ("file", "folder")
