"""einsim: attention algorithms written once as cascades of Einsums, then analysed, simulated,
run as Triton kernels and tuned.

The repository's top-level folders are this package's subpackages (`einsim.einsum_cascades`,
`einsim.simulator`, `einsim.targets`, `einsim.kernels`, `einsim.autotune`); setup.py maps them at
install time. Run from a source checkout without installing (`PYTHONPATH=.`), the same names
resolve through the path extension below.
"""

from pathlib import Path as _Path

from einsim.errors import EinsimError, SpecError

__version__ = "0.1.0"

_checkout_root = _Path(__file__).resolve().parent.parent
if (_checkout_root / "setup.py").is_file() and (_checkout_root / "einsum_cascades").is_dir():
    # A source checkout: let `einsim.simulator` find the top-level `simulator/` folder, exactly
    # as the installed distribution maps it. Never true inside site-packages.
    __path__.append(str(_checkout_root))  # type: ignore[name-defined]

__all__ = ["EinsimError", "SpecError", "__version__"]
