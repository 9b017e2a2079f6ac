"""einsim: attention algorithms written once as cascades of Einsums, then analysed, simulated,
run as Triton kernels and tuned.

The notebook API, importable from here:

    from einsim import simulate, load_cascade, load_target, Problem
    estimate = simulate("fusemax", Problem(batch=1, q_heads=32, kv_heads=8, q_len=4096,
                                           kv_len=4096, head_dim=128, causal=True), "h100-sxm")
    print(estimate)                      # the report `einsim simulate` prints
    rows = estimate.records()            # one row per Einsum: pandas.DataFrame(rows)

Each name is imported on first use (PEP 562), so `import einsim.errors` stays cheap and the
package itself imports nothing above the bottom layer (tests/test_layers.py).

The repository's top-level folders are this package's subpackages (`einsim.einsum_cascades`,
`einsim.simulator`, `einsim.targets`, `einsim.kernels`, `einsim.autotune`); setup.py maps them at
install time. Run from a source checkout without installing (`PYTHONPATH=.`), the same names
resolve through the path extension below.
"""

from importlib import import_module as _import_module
from pathlib import Path as _Path

from einsim.errors import ConfigError, EinsimError, ShapeError, SpecError

__version__ = "0.1.0"

_checkout_root = _Path(__file__).resolve().parent.parent
if (_checkout_root / "setup.py").is_file() and (_checkout_root / "einsum_cascades").is_dir():
    # A source checkout: let `einsim.simulator` find the top-level `simulator/` folder, exactly
    # as the installed distribution maps it. Never true inside site-packages.
    __path__.append(str(_checkout_root))  # type: ignore[name-defined]

# public name -> the module that defines it
_LAZY = {
    "Problem": "einsim.problem",
    "parse_shape": "einsim.shapes",
    "load_cascade": "einsim.einsum_cascades.loader",
    "analyze_passes": "einsim.einsum_cascades.passes",
    "load_target": "einsim.targets.loader",
    "load_model": "einsim.simulator.models",
    "simulate": "einsim.simulator.simulate",
    "Estimate": "einsim.simulator.estimate",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'einsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["ConfigError", "EinsimError", "ShapeError", "SpecError", "__version__", *_LAZY]
