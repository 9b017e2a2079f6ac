"""Map the repository's top-level folders into the one `einsim` namespace.

`kernels/` and `simulator/` are common top-level names in other distributions, so each folder
is installed as a subpackage of `einsim` (`einsim.kernels`, `einsim.simulator`, ...). Everything
else about the distribution is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent

# installed package name -> folder in this repository
PACKAGE_DIRS = {
    "einsim": "einsim",
    "einsim.einsum_cascades": "einsum_cascades",
    "einsim.simulator": "simulator",
    "einsim.targets": "targets",
    "einsim.kernels": "kernels",
    "einsim.autotune": "autotune",
}


def _is_package_folder(folder: Path) -> bool:
    """A folder that ships: Python code (an __init__.py) or data files (library/*.yaml,
    presets/*.yaml, models/*.yaml). Caches and hidden folders are not."""
    if folder.name == "__pycache__" or folder.name.startswith("."):
        return False
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def discover_packages() -> list[str]:
    """Every folder below a mapped folder that holds code or package data, named inside `einsim`.

    Data-only folders (einsum_cascades/library, targets/presets, simulator/models) are listed too:
    Python imports them as namespace packages, and setuptools warns (BuildBackendWarning: "package
    would be ignored") for each importable folder left out of `packages`."""
    found = []
    for package, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for path in sorted([base, *(p for p in base.rglob("*") if p.is_dir())]):
            relative = path.relative_to(base)
            if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
                continue
            if _is_package_folder(path):
                found.append(".".join((package, *relative.parts)))
    return found


setup(package_dir=PACKAGE_DIRS, packages=discover_packages())
