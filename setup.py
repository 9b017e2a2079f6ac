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


def discover_packages() -> list[str]:
    """Every folder with an __init__.py below a mapped folder, named inside `einsim`."""
    found = []
    for package, folder in PACKAGE_DIRS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder)
            found.append(".".join((package, *relative.parts)))
    return found


setup(package_dir=PACKAGE_DIRS, packages=discover_packages())
