"""Layers import only downward (docs/architecture.md § Layers draws this table): every import of
every module, function-level ones included, is parsed and checked against LAYERS.

A module may import its own unit (its package: einsim.simulator.* from einsim.simulator.*) and
any unit of a lower layer; units of one layer do not import each other, except in the bottom
layer, whose small helpers may build on one another. No module-level import cycle anywhere, and
no try/except ImportError around einsim's own imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parent.parent

# Lowest first. The one table of who may import whom.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bottom", ("einsim.errors", "einsim.filter_inputs", "einsim.problem", "einsim.tiling", "einsim.units", "einsim.jsonio",
                "einsim.text", "einsim.shapes", "einsim.yamlio", "einsim.files", "einsim.kernel_rules")),
    ("cascades and targets", ("einsim.einsum_cascades", "einsim.targets")),
    ("simulator and kernels", ("einsim.simulator", "einsim.kernels")),
    ("autotune", ("einsim.autotune",)),
    ("plots", ("einsim.plots",)),
    ("public API", ("einsim",)),  # einsim/__init__.py: lazy names (simulate, Problem, ...)
    ("command line", ("einsim.cli",)),  # formats what the API returns
    ("entry point", ("einsim.__main__",)),
)

# Inside the simulator: its two cost models sit beside each other, below its front door (simulate,
# the layer and model estimates, sweeps, the paper validation), which dispatches to them.
SIMULATOR_FRONT = ("einsim.simulator.simulate", "einsim.simulator.layer", "einsim.simulator.model_estimate",
                   "einsim.simulator.sweep", "einsim.simulator.fast", "einsim.simulator.paper_runs",
                   "einsim.simulator.paper_validation")
# Inside the kernels: the hand-written families share plumbing (launch, runtime, registry,
# limits, einsim.kernel_rules) and never import one another.
KERNEL_FAMILIES = ("einsim.kernels.decode", "einsim.kernels.flash", "einsim.kernels.linear",
                   "einsim.kernels.multipass")
INSIDE: dict[str, tuple[str, ...]] = {
    "einsim.simulator.gpu_cost": ("einsim.simulator.spatial",) + SIMULATOR_FRONT,
    "einsim.simulator.spatial": ("einsim.simulator.gpu_cost",) + SIMULATOR_FRONT,
    **{family: tuple(f for f in KERNEL_FAMILIES if f != family) for family in KERNEL_FAMILIES},
}

# Imports that break the table today, each with the reason and who removes it. Keep it short.
KNOWN_EXCEPTIONS: set = set()
# Modules still wrapping their own package's imports in try/except ImportError (issue 10: "no
# hedging"). Delete an entry when its hedge is gone.
KNOWN_HEDGES: set = set()

# Repository folder -> the package it installs as (setup.py's PACKAGE_DIRS).
FOLDERS = {"einsim": "einsim", "einsum_cascades": "einsim.einsum_cascades", "simulator": "einsim.simulator",
           "targets": "einsim.targets", "kernels": "einsim.kernels", "autotune": "einsim.autotune"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    name = FOLDERS[parts[0]].split(".") + parts[1:]
    return ".".join(name[:-1] if name[-1] == "__init__" else name)


MODULES = {module_name(p): p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))}


def unit_of(module: str) -> str:
    """The table's entry a module belongs to: the longest unit that prefixes it."""
    units = [u for _, layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    assert units, f"{module} is in no layer of tests/test_layers.py LAYERS: add it there"
    return max(units, key=len)


def layer_of(unit: str) -> int:
    return next(i for i, (_, units) in enumerate(LAYERS) if unit in units)


def resolve(name: str) -> str:
    """`einsim.simulator.simulate.simulate` -> that module; `einsim.X`, X not a module: the API."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or "einsim"


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported einsim module, at module level) for every import in the file, including
    `from einsim import x` (x a module or an API name) and importlib.import_module("einsim...")."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        for name in names:
            if name == "einsim" or name.startswith("einsim."):
                found.append((node.lineno, resolve(name), id(node) in top_level))
    return found


def hedges(path: Path) -> list[int]:
    """Lines of try blocks that import einsim modules and catch ImportError."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Try):
            continue
        caught = {getattr(h.type, "id", None) for h in node.handlers}
        caught |= {getattr(e, "id", None) for h in node.handlers if isinstance(h.type, ast.Tuple)
                   for e in h.type.elts}
        guarded = [n for stmt in node.body for n in ast.walk(stmt)
                   if isinstance(n, ast.Import) and any(a.name.startswith("einsim") for a in n.names)
                   or isinstance(n, ast.ImportFrom) and (n.module or "").startswith("einsim")]
        if guarded and caught & {"ImportError", "ModuleNotFoundError"}:
            found.append(node.lineno)
    return found


def test_every_module_sits_in_a_layer():
    for module in MODULES:
        unit_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_only_downward(module):
    unit = unit_of(module)
    layer = layer_of(unit)
    bad = []
    for line, imported, _ in imports(MODULES[module]):
        other = unit_of(imported)
        if other == unit or (module, other) in KNOWN_EXCEPTIONS:
            continue
        other_layer = layer_of(other)
        if other_layer > layer:
            bad.append(f"line {line}: {imported} is above it ({LAYERS[other_layer][0]} over {LAYERS[layer][0]})")
        elif other_layer == layer and layer != 0:
            bad.append(f"line {line}: {imported} is beside it ({LAYERS[layer][0]}: its units do not import each other)")
    assert not bad, f"{MODULES[module].relative_to(REPO)} ({module}):\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted(INSIDE))
def test_units_inside_a_layer_keep_apart(package):
    bad = [f"{module} line {line}: {imported}" for module, path in MODULES.items()
           if module == package or module.startswith(package + ".")
           for line, imported, _ in imports(path)
           if any(imported == f or imported.startswith(f + ".") for f in INSIDE[package])]
    assert not bad, f"{package} imports what sits beside or above it inside its package:\n" + "\n".join(bad)


def test_every_package_is_checked():
    """Every package setup.py installs (kernels.compiler, kernels.linear, plots, cli, ...) has its
    modules in MODULES, so the rules above see them."""
    packages = {module_name(init) for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py")}
    assert {"einsim.kernels.compiler", "einsim.kernels.linear", "einsim.plots", "einsim.cli"} <= packages
    for package in packages:
        assert package in MODULES and any(m.startswith(package + ".") for m in MODULES), package


def test_no_module_level_import_cycle():
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        for _, imported, at_top in imports(path):
            if at_top and imported != module:
                graph.add_edge(module, imported)
    # a package's __init__ importing its own submodules is how packages export; not a cycle
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if b.startswith(a + ".")])
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "module-level import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles)


def test_no_module_hedges_against_its_own_package():
    """No try/except ImportError around einsim's own imports: a missing sibling is a bug to see."""
    bad = [f"{MODULES[module].relative_to(REPO)}:{line} ({module})"
           for module in MODULES if module not in KNOWN_HEDGES for line in hedges(MODULES[module])]
    assert not bad, "try/except ImportError around einsim imports:\n" + "\n".join(bad)


def test_known_exceptions_are_still_needed():
    """An exception nobody needs any more is removed from the table, not left to rot."""
    for module, other in KNOWN_EXCEPTIONS:
        assert module in MODULES and any(unit_of(i) == other for _, i, _ in imports(MODULES[module])), (
            f"KNOWN_EXCEPTIONS: {module} no longer imports {other}; delete the entry")
    for module in KNOWN_HEDGES:
        assert module in MODULES and hedges(MODULES[module]), (
            f"KNOWN_HEDGES: {module} no longer hedges its imports; delete the entry")


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The parser finds function-level and `from einsim import x` imports (so this test can fail)."""
    path = tmp_path / "probe.py"
    path.write_text("from einsim import units\n"
                    "def f():\n    from einsim.cli.output import render_table\n"
                    "    import importlib; importlib.import_module('einsim.autotune.study')\n")
    assert [(line, name, top) for line, name, top in imports(path)] == [
        (1, "einsim.units", True), (3, "einsim.cli.output", False), (4, "einsim.autotune.study", False)]
