"""Cascade text that used to give a silently wrong answer is a named error: an index literal past
its rank, a division by the constant 0, a cascade with no outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from einsim.einsum_cascades import parse_cascade
from einsim.einsum_cascades.executor import execute
from einsim.errors import SpecError

LIBRARY = Path(__file__).resolve().parent.parent / "einsum_cascades" / "library"
ONE_PASS = (LIBRARY / "attention-1pass.yaml").read_text()
LAST = "  - AV[b,h,f,p]      = RO[b,h,M1,f,p]"


def test_an_index_literal_past_its_rank_is_an_error_not_clipped() -> None:
    cascade = parse_cascade(ONE_PASS.replace(LAST, LAST + " + V[b,h,f,999999]"), "x.yaml")
    with pytest.raises(SpecError, match=r"x.yaml: Einsum .*V\[b,h,f,999999\] reads position 999999 of rank M, "
                                        r"which has 16 positions"):
        cascade.bind({"M": 16, "P": 4})
    rng = np.random.default_rng(0)
    inputs = {"Q": rng.standard_normal((1, 1, 64, 4)), "K": rng.standard_normal((1, 1, 64, 16)),
              "V": rng.standard_normal((1, 1, 64, 16))}
    with pytest.raises(SpecError, match="reads position 999999"):
        execute(cascade, inputs)
    inside = parse_cascade(ONE_PASS.replace(LAST, LAST + " + V[b,h,f,15]"), "x.yaml")
    assert inside.bind({"M": 16, "P": 4})["M"] == 16  # the last position is fine


@pytest.mark.parametrize("divisor", ["0", "0.0", "-0", "(0)"])
def test_division_by_the_constant_zero_is_an_error(divisor: str) -> None:
    with pytest.raises(SpecError, match="divides by the constant 0"):
        parse_cascade(ONE_PASS.replace(LAST, f"{LAST} / {divisor}"), "x.yaml")


def test_a_cascade_without_outputs_is_an_error() -> None:
    with pytest.raises(SpecError, match=r"x.yaml:\d+:\d+: outputs: expected at least one tensor"):
        parse_cascade(ONE_PASS.replace("outputs: [AV]", "outputs: []"), "x.yaml")


@pytest.mark.parametrize("cascade, old, new", [
    ("fusemax", "K[b,h,e,m1,m0]", "K[b,h,0,m1,m0]"),  # every key's first element only
    ("alibi", "Q[b,h,e,p]", "Q[b,h,e,0]"),  # the first query for every query
    ("fusemax", "* V[b,h,f,m1,m0]", "* V[b,h,f,0]"),  # the first value row for every key
])
def test_the_compiler_refuses_q_k_v_read_at_other_than_their_own_positions(cascade: str, old: str, new: str) -> None:
    """The fused kernel reads Q, K and V whole, each element at its own position; a cascade that
    reads them at a constant or shifted position used to compile to plain attention (found by
    fuzzing the compiler; a silently wrong answer)."""
    pytest.importorskip("torch")
    from einsim.errors import ConfigError
    from einsim.kernels import compile as compile_cascade

    text = (LIBRARY / f"{cascade}.yaml").read_text()
    assert old in text
    with pytest.raises(ConfigError, match="not every element of .* at its own position"):
        compile_cascade(parse_cascade(text.replace(old, new, 1), "x.yaml"))
