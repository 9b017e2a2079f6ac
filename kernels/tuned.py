"""The tuned-config store: the best config per (kernel, shape bucket, GPU) as plain JSON, the one
reader and writer of its files. `einsim autotune` writes it (export_best); a launcher given no
config reads it through KernelSpec.resolve_config, whose caller may hand it another lookup.

One file per kernel, `<dir>/<kernel>.json`: `{"kernel", "entries": [{"device", "gpu" (a
normalised GPU name), "bucket", "problem" (Problem.to_dict without name/symbols), "config", and
the measured numbers}]}`. Directories searched, first match wins: $EINSIM_TUNED_DIR,
~/.cache/einsim/tuned (where `einsim autotune` exports by default), the package's kernels/tuned/
(commit a file there to share it). Each file is read once per process (launchers resolve a
config once per launch plan, never per call). Kernels layer, plain Python: no torch, no triton, no optuna,
and no import of the registry (a kernel is passed in as its spec).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from einsim.errors import ConfigError, EinsimWarning
from einsim.kernels.launch import clear_plans
from einsim.problem import Problem

ENV_DIR = "EINSIM_TUNED_DIR"
TUNED_DIR = Path(__file__).resolve().parent / "tuned"  # shipped with the package


def gpu_key(name: str | None) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'; 'h100-sxm' -> 'h100-sxm'."""
    text = re.sub(r"[^a-z0-9]+", "-", str(name or "").lower()).strip("-")
    text = re.sub(r"^(nvidia|amd)-", "", text)
    return text or "unknown"


def gpu_family(name: str | None) -> str:
    """The first token of gpu_key: 'h100', 'h200', 'a100'."""
    return gpu_key(name).split("-")[0]


def _pow2_bucket(value: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, value))))


def shape_bucket(problem: Problem) -> str:
    """The shapes that share a tuned config: head dims, mask, GQA group and dtype exactly; the
    query length, key length and batch x heads rounded up to a power of two."""
    mask = "causal" if problem.causal else "full"
    if problem.window is not None:
        mask += f"-w{problem.window[0]}.{problem.window[1]}"
    return (f"d{problem.head_dim}-dv{problem.v_head_dim}-{mask}-g{problem.group_size}-{problem.dtype}"
            f"-q{_pow2_bucket(problem.q_len)}-kv{_pow2_bucket(problem.kv_len)}"
            f"-bh{_pow2_bucket(problem.batch * problem.q_heads)}")


def cache_dirs() -> list[Path]:
    """Where tuned configs are looked up, first match wins."""
    dirs = []
    if os.environ.get(ENV_DIR):
        dirs.append(Path(os.environ[ENV_DIR]).expanduser())
    dirs.append(default_cache_dir())
    dirs.append(TUNED_DIR)
    return dirs


def default_cache_dir() -> Path:
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    return Path.home() / ".cache" / "einsim" / "tuned"


def _problem_dict(problem: Problem) -> dict[str, Any]:
    """The attention call a cache entry is for: its shape fields, never a model's layer widths."""
    values = problem.to_dict()
    values.pop("name", None)
    values.pop("symbols", None)
    return values


_READ: dict[str, list] = {}  # path -> entries, read once per process (reload() forgets them)

MAX_FILE_BYTES = 16 << 20  # a tuning-cache file holds a few hundred entries: ~100 KB
LOCK_TIMEOUT_S = 60.0  # the longest export_best waits for another process writing the same file
_TEXT_FIELDS = ("device", "gpu", "bucket", "study", "storage", "tuned_at")


def _valid_entry(entry: Any) -> bool:
    """An entry the lookup can use without raising: a dict whose config is a dict of named
    values, whose problem (if any) is a dict and whose names are text."""
    return (isinstance(entry, dict) and isinstance(entry.get("config"), dict)
            and all(isinstance(k, str) for k in entry["config"])
            and isinstance(entry.get("problem", {}), dict)
            and all(entry.get(name) is None or isinstance(entry.get(name), str) for name in _TEXT_FIELDS))


def _parse(path: Path) -> tuple[list[dict[str, Any]], str]:
    """(the usable entries, what is wrong with the file or "" when nothing is). A missing file
    has no entries and nothing wrong; never raises."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return [], f"larger than {MAX_FILE_BYTES >> 20} MiB"
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return [], ""
    except (OSError, ValueError, RecursionError) as error:  # unreadable, not JSON, nested too deep
        return [], f"not a tuning-cache file ({type(error).__name__}: {' '.join(str(error).split())[:120]})"
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        return [], 'not a tuning-cache file (expected {"kernel": ..., "entries": [...]})'
    entries = [e for e in data["entries"] if _valid_entry(e)]
    skipped = len(data["entries"]) - len(entries)
    return entries, (f"{skipped} of {len(data['entries'])} entries are malformed" if skipped else "")


def read_entries(path: Path, *, fresh: bool = False) -> list[dict[str, Any]]:
    """Entries of one cache file, read on first use and kept (fresh=True: read it now): launchers
    resolve configs once per launch plan and never touch the file system on a plan hit. Never
    raises: a missing file has no entries; an unreadable or malformed file or entry is skipped
    with one EinsimWarning per read naming the file."""
    key = str(path)
    cached = None if fresh else _READ.get(key)
    if cached is not None:
        return cached
    entries, problem = _parse(Path(path))
    if problem:
        warnings.warn(f"tuning cache {path}: {problem}: skipped (the next `einsim autotune` export sets a "
                      f"broken file aside)", EinsimWarning, stacklevel=2)
    _READ[key] = entries
    return entries


def reload() -> None:
    """Forget what was read: the next launch plan built reads the files again (plans already
    built keep their configs until einsim.kernels.launch.clear_plans())."""
    _READ.clear()


def tuned_config(spec: Any, problem: Problem, gpu_name: str | None = None) -> Any | None:
    """The tuned config of kernel `spec` (a KernelSpec) for `problem` on `gpu_name`, or None.

    Preference: the same problem exactly, then the same shape bucket; on the same GPU (normalised
    name), then the same GPU family (an 'h100-sxm' target matches an 'NVIDIA H100 80GB HBM3'
    device); a config the kernel rejects for this problem is skipped.
    """
    kernel = spec.name
    wanted_problem = _problem_dict(problem)
    bucket = shape_bucket(problem)
    best: tuple[int, Any] | None = None
    for directory in cache_dirs():
        for entry in read_entries(directory / f"{kernel}.json"):
            stored_gpu = entry.get("gpu") or gpu_key(entry.get("device"))
            if gpu_name is None:
                gpu_rank = 1
            elif stored_gpu == gpu_key(gpu_name):
                gpu_rank = 0
            elif stored_gpu.split("-")[0] == gpu_family(gpu_name):
                gpu_rank = 1
            else:
                continue
            if entry.get("problem") == wanted_problem:
                shape_rank = 0
            elif entry.get("bucket") == bucket:
                shape_rank = 1
            else:
                continue
            rank = 2 * shape_rank + gpu_rank
            if best is not None and rank >= best[0]:
                continue
            try:  # a hand-edited config ({"BLOCK_N": "x"}) must not break every launch
                config = spec.config_from_dict(entry["config"])
                if spec.check_config(config, problem, None):
                    continue
            except (ConfigError, TypeError, ValueError, ArithmeticError, AttributeError, KeyError):
                continue
            best = (rank, config)
        if best is not None and best[0] == 0:
            break
    return best[1] if best else None


def export_best(kernel: str, problem: Problem, gpu_name: str, config: Any, *, measured_s: float,
                predicted_s: float | None = None, default_s: float | None = None, study: str = "",
                storage: str = "", evaluations: int = 0, directory: str | Path | None = None,
                provenance: dict[str, Any] | None = None) -> Path:
    """Write (or replace) the entry for (kernel, shape bucket, GPU) and return the file's path.
    `provenance`: what made the numbers (library versions, retest spread, command), recorded
    with the entry.

    Safe with many processes exporting at once and with a damaged file: under a file lock
    (`<kernel>.json.lock`, waited for at most LOCK_TIMEOUT_S) the file is read again, the entry
    merged into what is there, and the result written to a unique temporary file that replaces
    the old one in one rename (a reader sees the old file or the new one, never half). A file
    that cannot be read back whole is never overwritten: it is renamed aside
    (`<kernel>.json.corrupt-<time>`) with a warning naming both paths, and its usable entries
    are carried over.
    """
    from filelock import FileLock, Timeout

    directory = Path(directory).expanduser() if directory else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"tuning cache: cannot create the folder {directory}: {error.strerror or error}") from None
    if not directory.is_dir():
        raise ConfigError(f"tuning cache: {directory} is not a folder")
    path = directory / f"{kernel}.json"
    entry = {
        "device": gpu_name,
        "gpu": gpu_key(gpu_name),
        "bucket": shape_bucket(problem),
        "problem": _problem_dict(problem),
        "config": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        if dataclasses.is_dataclass(config) else dict(config),
        "measured_s": _finite(measured_s),
        "predicted_s": _finite(predicted_s),
        "default_s": _finite(default_s),
        "study": study,
        "storage": _redact(storage),
        "evaluations": evaluations,
        "tuned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if provenance:
        entry["provenance"] = dict(provenance)
    lock = FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            entries, problem_found = _parse(path)
            if problem_found:
                aside = _set_aside(path)
                warnings.warn(f"tuning cache {path}: {problem_found}: set aside as {aside} (kept, not overwritten); "
                              f"{len(entries)} usable entries carried over", EinsimWarning, stacklevel=2)
            entries = [e for e in entries if not ((e.get("gpu") or gpu_key(e.get("device"))) == entry["gpu"]
                                                  and e.get("bucket") == entry["bucket"])]
            entries.append(entry)
            entries.sort(key=lambda e: (str(e.get("gpu")), str(e.get("bucket"))))
            _write_atomically(path, json.dumps({"kernel": kernel, "entries": entries}, indent=2,
                                               allow_nan=False) + "\n")
    except Timeout:
        raise ConfigError(f"tuning cache {path}: another process has held {lock.lock_file} for "
                          f"{LOCK_TIMEOUT_S:.0f} s; if no einsim is exporting, delete that lock file") from None
    except OSError as error:
        raise ConfigError(f"tuning cache {path}: cannot write: {error.strerror or error}") from None
    reload()  # this process uses the new entry from its next call
    clear_plans()
    return path


def _finite(value: float | None) -> float | None:
    """A time for JSON: None for a missing, NaN or infinite one (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def _set_aside(path: Path) -> Path:
    """Rename a damaged cache file to a name no other file has; returns the new path."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{attempt}" if attempt else ""))
        if not aside.exists():
            os.replace(path, aside)
            return aside
    raise OSError(f"no free name to set {path} aside")


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to a unique temporary file beside `path`, flush it to disk, then rename it
    over `path` (os.replace is atomic on one file system); the temporary file never outlives a
    failure."""
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def _redact(url: str) -> str:
    """A storage URL without its password (the cache may be committed and shared)."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", str(url))
