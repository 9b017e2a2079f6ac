"""Generated kernel source on disk, keyed by its content hash, imported as a real module (Triton's
JIT reads a kernel's source back from its file, so an exec'd string will not do).

The directory is $EINSIM_COMPILE_DIR, else ~/.cache/einsim/compiled. A file is written once
(atomically, so concurrent processes never import half a file) and reused by every later
process; within a process the module is imported once.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from einsim.errors import ConfigError

ENV_DIR = "EINSIM_COMPILE_DIR"
_MODULES: dict[str, object] = {}


def compile_dir() -> Path:
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    return Path.home() / ".cache" / "einsim" / "compiled"


def module_path(digest: str) -> Path:
    return compile_dir() / f"einsim_cascade_{digest}.py"


def write_source(source: str, digest: str) -> Path:
    """Write `source` to its cache file unless it is there already; returns the path."""
    path = module_path(digest)
    try:
        if not path.is_file() or path.read_text() != source:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as out:
                out.write(source)
            os.replace(temporary, path)
    except OSError as error:
        raise ConfigError(f"cannot write the generated kernel to {path}: {error}; set "
                          f"{ENV_DIR} to a writable directory") from None
    return path


def load_source(source: str, digest: str):
    """The module of `source` (written to the cache if missing or different, then imported)."""
    if digest in _MODULES:
        return _MODULES[digest]
    path = write_source(source, digest)
    name = f"einsim_cascade_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _MODULES[digest] = module
    return module


__all__ = ["ENV_DIR", "compile_dir", "load_source", "module_path", "write_source"]
