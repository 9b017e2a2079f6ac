"""The distribution maps every top-level folder into the one `einsim` namespace, for regular
installs, editable installs and plain source checkouts alike, from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("einsum_cascades", "simulator", "targets", "kernels", "autotune")
IMPORT_ALL = "; ".join(
    ["import einsim, einsim.cli"] + [f"import einsim.{name}" for name in SUBPACKAGES]
) + "; print(einsim.kernels.__file__)"


def _python(code: str, cwd: Path, env_extra: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def regular_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A regular (non-editable) install of the checkout into its own folder, and what the build
    printed (verbose, so the build backend's warnings are in it)."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return target, result.stdout + result.stderr


def test_install_prints_no_build_warnings(regular_install: tuple[Path, str]) -> None:
    """A clean install: no setuptools BuildBackendWarning / deprecation blocks (a data folder
    absent from `packages` printed one such block per folder)."""
    _, log = regular_install
    warnings = [line.strip() for line in log.splitlines()
                if "Warning" in line and ("setuptools" in line or "BuildBackend" in line)]
    assert not warnings, "\n".join(warnings)


def test_regular_install_imports_every_subpackage_from_any_directory(regular_install: tuple[Path, str],
                                                                     tmp_path: Path) -> None:
    target, _ = regular_install
    installed = target / "einsim"
    for name in SUBPACKAGES:
        assert (installed / name / "__init__.py").is_file(), f"einsim.{name} missing from the install"
    # Nothing is installed at the top level under the generic names.
    assert not (target / "kernels").exists() and not (target / "simulator").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    kernels_file = _python(IMPORT_ALL, elsewhere, {"PYTHONPATH": str(target)})
    assert Path(kernels_file).is_relative_to(installed)


def test_package_data_is_installed(regular_install: tuple[Path, str]) -> None:
    target, _ = regular_install
    for folder, pattern in (("einsum_cascades/library", "*.yaml"), ("targets/presets", "*.yaml"),
                            ("simulator/models", "*.yaml"), ("kernels/tuned", "*.json")):
        shipped = sorted(p.name for p in (REPO / folder).glob(pattern))
        assert shipped, f"no {pattern} under {folder}"
        installed = sorted(p.name for p in (target / "einsim" / folder).glob(pattern))
        assert installed == shipped, f"{folder}: installed {installed}, repository has {shipped}"


def test_source_checkout_imports_with_pythonpath(tmp_path: Path) -> None:
    """How the device tool runs the project: `PYTHONPATH=.` from an uninstalled checkout."""
    kernels_file = _python(IMPORT_ALL, tmp_path, {"PYTHONPATH": str(REPO)})
    assert Path(kernels_file) == REPO / "kernels" / "__init__.py"


def test_installed_einsim_imports_from_any_directory(tmp_path: Path) -> None:
    """The environment's own install (editable in CI) works outside the checkout."""
    probe = subprocess.run([sys.executable, "-c", "import einsim"], cwd=tmp_path, capture_output=True)
    if probe.returncode != 0:
        pytest.skip("einsim is not installed in this environment")
    kernels_file = _python(IMPORT_ALL, tmp_path)
    assert Path(kernels_file).resolve().is_relative_to(REPO) or "site-packages" in kernels_file
