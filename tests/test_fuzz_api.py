"""Fuzzing the public Python API (einsim.simulate, Problem, load_cascade, load_target, load_model,
parse_shape, analyze_passes) with values of the wrong type and hostile values: each call returns
or raises a named einsim error (tests/fuzz_support.py)."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, strategies as st  # noqa: E402

from fuzz_support import FUZZ, HOSTILE_TEXT, check_api  # noqa: E402

import einsim  # noqa: E402
from einsim import Problem  # noqa: E402

GOOD = Problem(batch=1, q_heads=4, q_len=128, kv_len=128, head_dim=64)
ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                     st.sampled_from(HOSTILE_TEXT), st.lists(st.integers(0, 5), max_size=3),
                     st.dictionaries(st.sampled_from(("a", "gpu", "key_tile")), st.integers(-1, 64), max_size=2),
                     st.just(GOOD), st.sampled_from(("fusemax", "h100-sxm", "fusemax-cloud", "BERT", "1,4,128,64")))


@hypothesis.settings(FUZZ, max_examples=80)
@given(function=st.sampled_from(("simulate", "load_cascade", "load_target", "load_model", "parse_shape",
                                 "analyze_passes", "Problem")),
       args=st.lists(ANYTHING, max_size=4))
def test_fuzz_public_api(function: str, args: list) -> None:
    if function == "Problem":
        names = ("batch", "q_heads", "q_len", "kv_len", "head_dim")
        values = dict(zip(names, (args + [1, 1, 1, 1, 64])[:5]))
        check_api(lambda: Problem(**values))
    elif function == "simulate":
        cascade, problem, target, mapping = (args + ["fusemax", GOOD, "fusemax-cloud", None])[:4]
        check_api(lambda: einsim.simulate(cascade, problem, target, mapping))
    else:
        check_api(lambda: getattr(einsim, function)(*(args[:1] or [None])))
