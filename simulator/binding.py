"""How a Problem binds a cascade's size symbols beyond its ranks: the sliding window's
(`window_left`, `window_right`). Both cost models (simulator/gpu_cost, simulator/spatial) and the
front door (simulate.py) bind through here, so neither model imports the front door."""

from __future__ import annotations

from einsim.einsum_cascades.ir import Cascade
from einsim.errors import ShapeError
from einsim.problem import Problem

WINDOW_SYMBOLS = ("window_left", "window_right")


def window_binding(cascade: Cascade, problem: Problem) -> dict[str, int]:
    """The cascade's sliding-window symbols bound to the problem's window. A cascade whose filter
    keeps a window of keys on a problem without a window is a ShapeError naming the fix: the
    YAML's symbol value is an example for running the cascade alone, never a workload parameter
    the simulator may invent."""
    symbols = cascade.symbols
    names = [s for s in WINDOW_SYMBOLS if s in symbols]
    if not names:
        return {}
    if problem.window is None:
        raise ShapeError(
            f"{cascade.source}: {cascade.name} keeps a sliding window of keys ({', '.join(names)} in its filter), but "
            f"the problem ({problem.label}) has no window; give it one: --window LEFT,RIGHT on the command line "
            f"(Mistral's causal window of 4096 keys is --window 4095,0), Problem(window=(left, right)) in Python, "
            f"or simulate a cascade without a window")
    return dict(zip(WINDOW_SYMBOLS, problem.window))
