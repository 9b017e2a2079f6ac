"""einsim.problem.Problem: the one attention-call type every layer shares."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from einsim.errors import ShapeError
from einsim.problem import DTYPE_BYTES, Problem


def test_kv_heads_and_v_head_dim_default_to_the_query_side():
    p = Problem(batch=2, q_heads=8, q_len=16, kv_len=16, head_dim=64)
    assert (p.kv_heads, p.v_head_dim, p.group_size, p.dtype, p.dtype_bytes) == (8, 64, 1, "bf16", 2)
    assert p == Problem(batch=2, q_heads=8, kv_heads=8, q_len=16, kv_len=16, head_dim=64, v_head_dim=64)


def test_fields_are_keyword_only():
    with pytest.raises(TypeError):
        Problem(2, 8, 16, 16, 64)  # type: ignore[misc]


def test_the_name_labels_but_does_not_distinguish():
    a = Problem(batch=1, q_heads=2, q_len=4, kv_len=4, head_dim=16, name="mine")
    b = replace(a, name="yours")
    assert a == b and hash(a) == hash(b)
    assert a.label == "mine" and replace(a, name="").label == a.describe()


def test_rank_sizes_bind_the_papers_ranks_and_the_problems_symbols():
    p = Problem(batch=2, q_heads=32, kv_heads=8, q_len=1, kv_len=4096, head_dim=128, v_head_dim=64,
                symbols={"hidden": 4096, "ffn_dim": 14336})
    assert p.rank_sizes() == {"B": 2, "H": 32, "G": 8, "E": 128, "F": 64, "M": 4096, "P": 1,
                              "batch": 2, "heads": 32, "kv_heads": 8, "head_dim": 128, "v_head_dim": 64,
                              "kv_len": 4096, "q_len": 1, "hidden": 4096, "ffn_dim": 14336}
    # a symbol a cascade names outside its rank declarations binds to the problem's size, not
    # to the YAML's example value (the spatial model used to add these four by hand)
    from einsim.einsum_cascades import load_cascade

    bound = load_cascade("gqa").bind(p.rank_sizes())
    assert (bound["heads"], bound["kv_heads"], bound["head_dim"], bound["v_head_dim"]) == (32, 8, 128, 64)
    # however the symbols are given, the problem is the same (and hashable)
    assert p == replace(p, symbols=(("hidden", 4096), ("ffn_dim", 14336)))
    assert len({p, replace(p, symbols=[("ffn_dim", 14336), ("hidden", 4096)])}) == 1


def test_with_seq_len_keeps_decode_a_single_query():
    prefill = Problem(batch=1, q_heads=2, q_len=1024, kv_len=1024, head_dim=64)
    decode = replace(prefill, q_len=1)
    assert (prefill.with_seq_len(4096).q_len, prefill.with_seq_len(4096).kv_len) == (4096, 4096)
    assert (decode.with_seq_len(4096).q_len, decode.with_seq_len(4096).kv_len) == (1, 4096)


@pytest.mark.parametrize("causal, window", [(False, None), (True, None), (False, (3, 2)), (True, (5, 0))])
@pytest.mark.parametrize("q_len, kv_len", [(1, 9), (7, 7), (9, 4)])
def test_visible_pairs_count_the_bottom_right_aligned_mask(causal, window, q_len, kv_len):
    p = Problem(batch=1, q_heads=1, q_len=q_len, kv_len=kv_len, head_dim=16, causal=causal, window=window)
    rows = np.arange(q_len)[:, None] + kv_len - q_len
    keys = np.arange(kv_len)[None, :]
    mask = np.ones((q_len, kv_len), dtype=bool)
    if causal:
        mask &= keys <= rows
    if window is not None:
        mask &= (keys >= rows - window[0]) & (keys <= rows + window[1])
    assert p.visible_pairs() == int(mask.sum())
    assert p.forward_flops() == mask.sum() * 2 * (16 + 16)


def test_to_dict_round_trips_through_json():
    p = Problem(batch=2, q_heads=8, kv_heads=2, q_len=3, kv_len=67, head_dim=80, v_head_dim=96,
                causal=True, window=(16, 0), dtype="fp16", name="odd", symbols={"hidden": 640})
    back = Problem.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p and back.name == "odd" and back.window == (16, 0)


@pytest.mark.parametrize("values, message", [
    ({"batch": 1, "q_heads": 2, "q_len": 4, "kv_len": 4}, "missing problem field.*head_dim"),
    ({"batch": 1, "q_heads": 2, "q_len": 4, "kv_len": 4, "head_dim": 8, "heads": 2}, "unknown problem field.*heads"),
    ([1, 2, 4, 4, 8], "expected a mapping"),
])
def test_from_dict_names_what_is_wrong(values, message):
    with pytest.raises(ShapeError, match=message):
        Problem.from_dict(values, source="cache.json")


@pytest.mark.parametrize("fields, message", [
    (dict(kv_heads=3), "multiple of kv_heads"),
    (dict(v_head_dim=0), "v_head_dim"),
    (dict(dtype="int4"), "dtype must be one of fp8, bf16, fp16, fp32"),
    (dict(symbols={"hidden": -1}), "symbols"),
    (dict(symbols={"not a name": 3}), "symbols"),
    (dict(symbols=5), "symbols"),
])
def test_bad_fields_are_shape_errors(fields, message):
    with pytest.raises(ShapeError, match=message):
        Problem(**{**dict(batch=1, q_heads=4, q_len=8, kv_len=8, head_dim=64), **fields})


def test_every_dtype_has_a_size():
    for dtype, size in DTYPE_BYTES.items():
        assert Problem(batch=1, q_heads=1, q_len=1, kv_len=1, head_dim=8, dtype=dtype).dtype_bytes == size
