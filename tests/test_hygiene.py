"""No hedging and no dead code in the package (issue 10). Each rule lists what it finds; an entry
of an allow-list carries the reason it stays, and an entry that no longer applies fails, so the
lists only shrink. (Sizes: tests/test_sizes.py; imports and their try/except ImportError:
tests/test_layers.py.)

- Hedges: an `except` that catches ImportError, ModuleNotFoundError, AttributeError or TypeError
  swallows what a refactor breaks (a renamed sibling, a missing field) and falls back silently;
  so does `getattr(x, "field", default)` / `hasattr(x, "field")` on one of our own types, whose
  fields always exist. Each one is a reason away from being a bug.
- Silent broad catches: an `except Exception` / `except BaseException` / bare `except:` must
  re-raise, keep the error (use the name it binds: a recorded failure, a named error) or say on
  its own line, in a comment, why dropping it is right.
- Unused imports: a name a module imports and never mentions again (package `__init__.py`
  files, which import to export, and `# noqa` lines aside).
- Dead code: a module-level function or class, or a method, whose name appears nowhere in the
  repository but its own definition (code, docs, YAML, launcher strings all count as a use).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("einsim", "einsum_cascades", "simulator", "targets", "kernels", "autotune")
CAUGHT = {"ImportError", "ModuleNotFoundError", "AttributeError", "TypeError"}
# Variables that, by the package's naming, hold one of einsim's own types (Cascade, Target,
# Problem, Mapping, Estimate, KernelSpec, ...): their fields always exist, so a getattr default
# or a hasattr on them is a silent fallback.
OWN_TYPES = {"cascade", "target", "problem", "mapping", "spec", "estimate", "einsum", "model",
             "layer", "design", "plan", "report", "config", "evaluator", "result", "study"}

# "path::function" (or "path" at module level) -> why the catch is not a hedge.
ALLOWED_CATCHES = {
    "einsim/filter_inputs.py::description_from_dict": "a user's description with unknown or missing fields: "
                                                      "the dataclass's TypeError becomes a ShapeError naming the file",
    "einsim/problem.py::_symbols": "the user's `symbols` argument: not a mapping of names to sizes is a ShapeError",
    "einsim/yamlio.py::LimitedSafeLoader.construct_mapping": "an unhashable YAML key: PyYAML's own error names it next",
    "einsim/plots/measured.py::_read_benchmark_rows": "a CSV cell that is not a number ('x', nan, a missing cell): a named error",
    "einsim/cli/__init__.py::main": "torch/triton (not einsim) missing: named, with the pip command",
    "einsim/cli/autotune_fleet.py::provenance": "a third-party library's version, None when it is not installed",
    "kernels/launch.py::PlanCache.find": "the caller's arguments cannot make a cache key (not tensors); "
                                         "the call's own checks then name what is wrong",
    "kernels/runtime.py::check_attention_inputs": "the user's window argument: not whole numbers is a ShapeError",
    "kernels/runtime.py::check_scale": "the user's scale argument: not a number is a ShapeError",
    "kernels/tuned.py::tuned_config": "a hand-edited tuned config ({'BLOCK_N': 'x'}) is skipped, never a broken launch",
    "kernels/launch.py::remember_launch": "Triton's compiled-kernel metadata: the interpreter has none",
    "autotune/storage.py::open_storage": "the PostgreSQL driver (a third-party extra) missing: a ConfigError naming it",
}
# "path::function::name.field" -> why the getattr default / hasattr stays.
ALLOWED_LOOKUPS = {
    "autotune/predict.py::kernel_mapping::config.store_states":
        "linear-fwd's and linear-bwd's configs differ: only the backward's has store_states",
    "autotune/predict.py::kernel_mapping::config.MATERIALIZE":
        "the fallthrough prices every forward config; only the multi-pass kernels' have MATERIALIZE",
    "autotune/study.py::plan_tuning::evaluator.source": "an evaluator is any object with __call__ (a user's own)",
    "autotune/study.py::plan_tuning::evaluator.gpu_name": "an evaluator is any object with __call__ (a user's own)",
    "autotune/study.py::retest_best_and_default::evaluator.retest":
        "only evaluators that can time again (the GPU's) have retest",
    "simulator/simulate.py::simulate::mapping.__dataclass_fields__":
        "checks the user's argument: a Mapping or GpuMapping (dataclasses), a dict or a path; else a ConfigError",
    "simulator/gpu_cost/mapping.py::_gpu_mapping::mapping.gpu":
        "a GPU mapping may be given as a dict, a GpuMapping or a general Mapping: only the last has .gpu",
}
# "path::name" -> why a definition nobody names stays.
ALLOWED_UNUSED = {
    "einsim/__init__.py::__dir__": "module protocol (PEP 562): dir(einsim) lists the lazy names",
    "autotune/sampler.py::GuidedSampler.infer_relative_search_space": "Optuna's BaseSampler protocol",
    "kernels/multipass/forward.py::launch_3pass": "named by the registry's launcher string f'...:launch_{passes}pass'",
}


def sources() -> list[Path]:
    return [p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))]


def _scopes(tree: ast.AST):
    """(qualified function name or '', node) for every node, innermost function or method."""
    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
                yield inner, child
                yield from visit(child, inner)
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{scope}.{child.name}" if scope else child.name)
            else:
                yield scope, child
                yield from visit(child, scope)
    return visit(tree, "")


def _function_key(scope: str) -> str:
    """'Class.method.inner' -> 'Class.method', 'function.inner' -> 'function': the entry's name."""
    parts = scope.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[0][:1].isupper() else parts[0]


@lru_cache(maxsize=1)
def scan() -> tuple[dict[str, int], dict[str, int]]:
    """(catches, lookups): key -> line of the first occurrence, over the whole package."""
    catches: dict[str, int] = {}
    lookups: dict[str, int] = {}
    for path in sources():
        relative = path.relative_to(REPO).as_posix()
        for scope, node in _scopes(ast.parse(path.read_text())):
            where = f"{relative}::{_function_key(scope)}" if scope else relative
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
                if {getattr(t, "id", None) for t in types} & CAUGHT:
                    catches.setdefault(where, node.lineno)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and (node.func.id == "hasattr" and len(node.args) == 2
                       or node.func.id == "getattr" and len(node.args) == 3)
                  and isinstance(node.args[0], ast.Name) and node.args[0].id in OWN_TYPES
                  and isinstance(node.args[1], ast.Constant)):
                lookups.setdefault(f"{where}::{node.args[0].id}.{node.args[1].value}", node.lineno)
    return catches, lookups


@lru_cache(maxsize=1)
def unused_definitions() -> dict[str, int]:
    """'path::name' -> line of every top-level function/class and method named nowhere else."""
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, timeout=30).stdout.split("\0")
    counts: dict[str, int] = {}
    this = Path(__file__).resolve().relative_to(REPO).as_posix()  # its allow-list names them
    for name in tracked:
        if name != this and name.endswith((".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg")) and (REPO / name).is_file():
            for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", (REPO / name).read_text(errors="replace")):
                counts[word] = counts.get(word, 0) + 1
    found = {}
    for path in sources():
        relative = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text())
        defined = [(node.name, node) for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        defined += [(f"{cls.name}.{item.name}", item) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
                    for item in cls.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and not (item.name.startswith("__") and item.name != "__dir__")]
        for name, node in defined:
            if counts.get(name.rpartition(".")[2], 0) <= 1:
                found[f"{relative}::{name}"] = node.lineno
    return found


def silent_broad_catches(path: Path) -> list[int]:
    """Lines of broad handlers that neither re-raise, nor use the error they bind, nor carry a
    `#` reason on the `except` line."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.ExceptHandler):
            continue
        if node.type is not None and getattr(node.type, "id", None) not in ("Exception", "BaseException"):
            continue
        body = [n for stmt in node.body for n in ast.walk(stmt)]
        reraises = any(isinstance(n, ast.Raise) for n in body)
        uses_error = node.name is not None and any(isinstance(n, ast.Name) and n.id == node.name for n in body)
        if not (reraises or uses_error or "#" in lines[node.lineno - 1]):
            found.append(node.lineno)
    return found


def test_broad_catches_are_never_silent():
    bad = [f"{path.relative_to(REPO)}:{line}" for path in sources() for line in silent_broad_catches(path)]
    assert not bad, ("a broad except that drops the error: re-raise it, keep it, or write why on the "
                     "except line:\n" + "\n".join(bad))


# "path" -> who removes its unused imports (files another stream is rewriting right now)
PENDING_IMPORTS = {
    "kernels/compiler/frontend.py": "compiler stream (its open change rewrites the file)",
    "kernels/compiler/codegen.py": "compiler stream (its open change rewrites the file)",
}


def unused_imports(path: Path) -> list[str]:
    """Names imported at module level that the module never mentions again."""
    text = path.read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    imported: dict[str, int] = {}
    spans = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not (isinstance(node, ast.ImportFrom)
                                                                    and node.module == "__future__"):
            spans |= set(range(node.lineno, node.end_lineno + 1))
            if any("noqa" in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1)):
                continue
            for alias in node.names:
                imported[(alias.asname or alias.name).split(".")[0]] = node.lineno
    rest = "\n".join(line for i, line in enumerate(lines, 1) if i not in spans)
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rest))
    return [f"{name} (line {line})" for name, line in imported.items() if name not in words]


def test_no_unused_imports():
    bad = [f"{path.relative_to(REPO)}: {', '.join(names)}" for path in sources()
           if path.name != "__init__.py" and path.relative_to(REPO).as_posix() not in PENDING_IMPORTS
           for names in [unused_imports(path)] if names]
    assert not bad, "imported and never used (delete the import):\n" + "\n".join(bad)


def test_no_hedging_catches():
    catches, _ = scan()
    bad = [f"{key} (line {line})" for key, line in catches.items() if key not in ALLOWED_CATCHES]
    assert not bad, ("except ImportError/AttributeError/TypeError hides what a refactor breaks: let it "
                     "raise, check the input up front, or add the reason to ALLOWED_CATCHES:\n" + "\n".join(bad))


def test_no_fallbacks_on_our_own_types():
    _, lookups = scan()
    bad = [f"{key} (line {line})" for key, line in lookups.items() if key not in ALLOWED_LOOKUPS]
    assert not bad, ("getattr(x, 'field', default) / hasattr on one of our own types: the field is "
                     "always there (use it), or add the reason to ALLOWED_LOOKUPS:\n" + "\n".join(bad))


def test_no_dead_code():
    bad = [f"{key} (line {line})" for key, line in unused_definitions().items() if key not in ALLOWED_UNUSED]
    assert not bad, "defined and never used anywhere in the repository: delete it\n" + "\n".join(bad)


def test_allow_lists_only_shrink():
    catches, lookups = scan()
    stale = (sorted(set(ALLOWED_CATCHES) - set(catches)) + sorted(set(ALLOWED_LOOKUPS) - set(lookups))
             + sorted(set(ALLOWED_UNUSED) - set(unused_definitions()))
             + sorted(p for p in PENDING_IMPORTS if not unused_imports(REPO / p)))
    assert not stale, f"tests/test_hygiene.py: these no longer apply, delete them: {stale}"


def test_the_checks_see_what_they_look_for(tmp_path, monkeypatch):
    probe = tmp_path / "einsim" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("def f(cascade):\n    try:\n        return getattr(cascade, 'symbols', {})\n"
                     "    except AttributeError:\n        return hasattr(cascade, 'filters')\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "FOLDERS", ("einsim",))
    scan.cache_clear()
    try:
        catches, lookups = scan()
    finally:
        scan.cache_clear()
    assert catches == {"einsim/probe.py::f": 4}
    assert lookups == {"einsim/probe.py::f::cascade.symbols": 3, "einsim/probe.py::f::cascade.filters": 5}


def test_a_silent_broad_catch_is_seen(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    try:\n        g()\n    except Exception:\n        return 0\n"
                     "    try:\n        g()\n    except Exception:  # why: ...\n        return 0\n"
                     "    try:\n        g()\n    except Exception as error:\n        return str(error)\n")
    assert silent_broad_catches(probe) == [4]
