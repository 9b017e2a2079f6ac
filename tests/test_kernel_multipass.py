"""The 2-pass and 3-pass forward kernels against the float64 oracle, their HBM traffic formulas
and their input checks. On CPU they run in Triton's interpreter (tiny shapes); with a GPU and no
TRITON_INTERPRET they run compiled at the same shapes plus one real size."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from einsim.einsum_cascades.reference import attention_reference  # noqa: E402
from einsim.errors import ConfigError, ShapeError  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.kernels.multipass import config as cfg  # noqa: E402
from einsim.kernels import runtime  # noqa: E402
from einsim.kernels.multipass.forward import attention_2pass, attention_3pass  # noqa: E402

DEVICE = "cpu" if runtime.interpreting() or not torch.cuda.is_available() else "cuda"
KERNELS = {2: attention_2pass, 3: attention_3pass}
SMALL = cfg.MultipassConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)
WIDE = cfg.MultipassConfig(BLOCK_M=16, BLOCK_N=64, num_warps=4, num_stages=1)  # fewer interpreted tiles
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def make_qkv(batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = ((batch, q_heads, q_len, head_dim), (batch, kv_heads, kv_len, head_dim),
              (batch, kv_heads, kv_len, head_dim))
    return [torch.randn(s, generator=generator).to(DTYPES[dtype]).to(DEVICE) for s in shapes]


def assert_matches_reference(out, lse, q, k, v, *, causal=False, window=None):
    ref_out, ref_lse = attention_reference(*(t.double().cpu().numpy() for t in (q, k, v)),
                                           causal=causal, window=window)
    tolerance = 2e-2 if q.dtype == torch.bfloat16 else 4e-3
    np.testing.assert_allclose(out.double().cpu().numpy(), ref_out, atol=tolerance, rtol=0)
    lse = lse.double().cpu().numpy()
    assert np.array_equal(np.isneginf(lse), np.isneginf(ref_lse)), "empty rows differ"
    finite = np.isfinite(ref_lse)
    np.testing.assert_allclose(lse[finite], ref_lse[finite], atol=1e-3, rtol=0)


# (batch, q_heads, kv_heads, q_len, kv_len, head_dim, causal, window, dtype)
CASES = [
    pytest.param(1, 4, 1, 17, 17, 80, True, None, "fp16", id="gqa4-causal-17-d80"),
    pytest.param(1, 2, 2, 1, 300, 64, False, None, "fp16", id="one-query-row-kv300"),
    pytest.param(2, 2, 1, 17, 300, 32, False, None, "fp16", id="batch2-q17-kv300"),
    pytest.param(1, 1, 1, 300, 17, 16, True, None, "fp16", id="causal-q300-kv17-empty-rows"),
    pytest.param(1, 2, 1, 33, 70, 32, False, (5, 3), "fp16", id="window-smaller-than-block"),
    pytest.param(1, 2, 1, 33, 70, 32, True, (9, 0), "fp16", id="causal-sliding-window"),
    pytest.param(1, 4, 1, 17, 33, 96, True, None, "bf16", id="bf16-d96-causal"),
    pytest.param(1, 1, 1, 1, 1, 128, False, None, "bf16", id="length-1"),
]


@pytest.mark.parametrize("materialize", [False, True], ids=["recompute", "materialize"])
@pytest.mark.parametrize("passes", [2, 3])
@pytest.mark.parametrize("batch,q_heads,kv_heads,q_len,kv_len,head_dim,causal,window,dtype", CASES)
def test_multipass_kernel_equals_softmax_attention(poisoned, passes, materialize, batch, q_heads,
                                                   kv_heads, q_len, kv_len, head_dim, causal,
                                                   window, dtype):
    q, k, v = make_qkv(batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype)
    config = dataclasses.replace(WIDE if kv_len > 64 else SMALL, MATERIALIZE=materialize)
    out, lse = KERNELS[passes](q, k, v, causal=causal, window=window, config=config)
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == q.shape[:3]
    assert_matches_reference(out, lse, q, k, v, causal=causal, window=window)


@pytest.mark.parametrize("passes", [2, 3])
def test_multipass_default_config_and_explicit_scale(passes):
    q, k, v = make_qkv(1, 2, 1, 20, 40, 64, "fp16", seed=1)
    out, lse = KERNELS[passes](q, k, v, scale=0.5)
    ref_out, _ = attention_reference(*(t.double().cpu().numpy() for t in (q, k, v)), scale=0.5)
    np.testing.assert_allclose(out.double().cpu().numpy(), ref_out, atol=4e-3, rtol=0)


@pytest.mark.parametrize("passes", [2, 3])
def test_multipass_kernel_takes_any_strides(passes):
    # q, k, v as views of [B, N, H, D] buffers (a fused QKV projection's layout)
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in make_qkv(1, 4, 2, 17, 30, 32, "fp16"))
    assert not q.is_contiguous()
    out, lse = KERNELS[passes](q, k, v, causal=True, config=SMALL)
    assert_matches_reference(out, lse, q, k, v, causal=True)


@pytest.mark.skipif(DEVICE != "cuda", reason="real sizes need a GPU")
@pytest.mark.parametrize("materialize", [False, True], ids=["recompute", "materialize"])
@pytest.mark.parametrize("passes", [2, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_multipass_kernel_at_real_size(passes, causal, materialize):
    q, k, v = make_qkv(2, 8, 2, 1000, 1000, 128, "bf16")
    p = Problem(batch=2, q_heads=8, kv_heads=2, q_len=1000, kv_len=1000, head_dim=128,
                         causal=causal)
    config = dataclasses.replace(cfg.default_config(p), MATERIALIZE=materialize)
    out, lse = KERNELS[passes](q, k, v, causal=causal, config=config)
    assert_matches_reference(out, lse, q, k, v, causal=causal)


# --- traffic: the cascade's, not better ----------------------------------------------------------

def problem(**changes):
    fields = dict(batch=2, q_heads=8, kv_heads=2, q_len=1024, kv_len=1024, head_dim=128,
                  causal=False, window=None, dtype="bf16")
    fields.update(changes)
    return Problem(**fields)


def test_recompute_passes_stream_k_once_each_and_the_last_pass_streams_v():
    p = problem()
    config = cfg.MultipassConfig(BLOCK_M=64, BLOCK_N=64)
    k_bytes = p.batch * p.kv_heads * p.kv_len * p.head_dim * 2
    for passes in (2, 3):
        traffic = cfg.pass_traffic(p, config, passes)
        assert len(traffic) == passes
        assert [t.reads["K"] for t in traffic] == [k_bytes] * passes
        assert [t.reads.get("V", 0) for t in traffic] == [0] * (passes - 1) + [k_bytes]
        assert traffic[-1].writes["O"] == p.batch * p.q_heads * p.q_len * p.head_dim * 2


def test_materialized_two_pass_moves_per_tile_statistics_and_numerators_not_k():
    p = problem()
    config = cfg.MultipassConfig(BLOCK_M=64, BLOCK_N=64, MATERIALIZE=True)
    first, second = cfg.pass_traffic(p, config, 2)
    per_tile = p.batch * p.q_heads * p.q_len * (p.kv_len // 64) * cfg.STATS_BYTES
    assert first.writes["LM"] == first.writes["SLD"] == second.reads["LM"] == per_tile
    assert first.writes["SLNV"] == second.reads["SLNV"] == per_tile * p.head_dim
    assert "K" in first.reads and "V" in first.reads and not {"Q", "K", "V"} & set(second.reads)


def test_materialized_three_pass_reads_k_once_and_moves_scores_through_hbm():
    p = problem(causal=True)
    config = cfg.MultipassConfig(BLOCK_M=64, BLOCK_N=64, MATERIALIZE=True)
    first, second, third = cfg.pass_traffic(p, config, 3)
    assert "K" in first.reads and "K" not in second.reads and "K" not in third.reads
    assert first.writes["QK"] == second.reads["QK"] == second.writes["SN"] == third.reads["SN"]
    visited = p.batch * p.q_heads * p.visited_tiles(64, 64) * 64 * 64 * cfg.STATS_BYTES
    assert first.writes["QK"] == visited


def test_requested_bytes_count_k_once_per_query_tile_and_head():
    p = problem()
    config = cfg.MultipassConfig(BLOCK_M=128, BLOCK_N=64)
    traffic = cfg.pass_traffic(p, config, 3, reuse=False)
    query_tiles = p.q_len // 128
    assert traffic[0].reads["K"] == p.batch * p.q_heads * query_tiles * p.kv_len * p.head_dim * 2
    assert cfg.requested_bytes(p, config, 3) > cfg.hbm_bytes(p, config, 3)


def test_causal_skips_masked_tiles_in_every_pass():
    config = cfg.MultipassConfig(BLOCK_M=64, BLOCK_N=64)
    dense = cfg.requested_bytes(problem(), config, 2)
    causal = cfg.requested_bytes(problem(causal=True), config, 2)
    assert 0.45 < causal / dense < 0.6


def test_multipass_kernels_are_registered_with_their_cascades():
    from einsim.kernels.registry import KERNELS

    for passes in (2, 3):
        spec = KERNELS[f"attention-{passes}pass-fwd"]
        assert spec.cascade == f"attention-{passes}pass" and spec.passes == passes
        p = problem()
        config = spec.default_config(p)
        assert spec.hbm_bytes(p, config) == cfg.hbm_bytes(p, config, passes)
        assert len(spec.pass_traffic(p, config)) == passes


# --- configs and bad input -------------------------------------------------------------------------

def test_default_config_and_search_space_fit_an_h100():
    for head_dim in (16, 64, 80, 96, 128, 256):
        p = problem(head_dim=head_dim)
        assert cfg.check_config(cfg.default_config(p), p) == []
        space = cfg.search_space(p)
        assert space and all(cfg.check_config(c, p) == [] for c in space)


def test_config_that_overflows_shared_memory_is_rejected():
    p = problem(head_dim=256)
    too_big = cfg.MultipassConfig(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=4)
    assert cfg.shared_memory_bytes(too_big, p) > 232448
    assert any("shared memory" in reason for reason in cfg.check_config(too_big, p))
    q, k, v = make_qkv(1, 1, 1, 4, 4, 256, "fp16")
    with pytest.raises(ConfigError, match="shared memory"):
        attention_2pass(q, k, v, config=too_big)
    with pytest.raises(ConfigError, match="expected a MultipassConfig"):
        attention_3pass(q, k, v, config=object())


@pytest.mark.parametrize("passes", [2, 3])
def test_bad_input_raises_before_launch(passes):
    run = KERNELS[passes]
    q, k, v = make_qkv(1, 4, 2, 8, 8, 64, "fp16")
    with pytest.raises(ShapeError, match="dtype"):
        run(q.float(), k.float(), v.float())
    with pytest.raises(ShapeError, match="dtypes differ"):
        run(q, k.to(torch.bfloat16), v)
    with pytest.raises(ShapeError, match="multiple of key/value heads"):
        run(q[:, :3], k, v)
    with pytest.raises(ShapeError, match="head dims differ"):
        run(q, k[..., :32], v)
    with pytest.raises(ShapeError, match="4-D"):
        run(q[0], k[0], v[0])
    with pytest.raises(ShapeError, match="window"):
        run(q, k, v, window=(-1, 0))
    with pytest.raises(ConfigError, match="BLOCK_M"):
        run(q, k, v, config=cfg.MultipassConfig(BLOCK_M=48))
    small = make_qkv(1, 1, 1, 4, 4, 8, "fp16")
    with pytest.raises(ShapeError, match="16..256"):
        run(*small)
