"""The split-KV decode kernel against the float64 oracle, its split-count choice, its traffic
formula and its input checks. Interpreter on CPU (tiny shapes); compiled on a GPU."""

from __future__ import annotations

import os
import dataclasses

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from einsim.errors import ConfigError, ShapeError  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.kernels.limits import DeviceLimits  # noqa: E402
from einsim.kernels.decode import config as cfg  # noqa: E402
from einsim.kernels.decode.forward import decode_attention  # noqa: E402
from einsim.kernels import runtime  # noqa: E402

from test_kernel_multipass import DEVICE, assert_matches_reference, make_qkv  # noqa: E402


def decode_problem(**changes):
    fields = dict(batch=16, q_heads=16, kv_heads=16, q_len=1, kv_len=16384, head_dim=128,
                  causal=False, window=None, dtype="bf16")
    fields.update(changes)
    return Problem(**fields)


# (batch, q_heads, kv_heads, q_len, kv_len, head_dim, causal, window, NUM_SPLITS, dtype)
CASES = [
    pytest.param(1, 4, 1, 1, 300, 80, False, None, None, "fp16", id="gqa4-q1-kv300-d80-auto"),
    pytest.param(1, 8, 2, 3, 300, 64, True, None, 3, "fp16", id="gqa4-q3-causal-3splits"),
    pytest.param(2, 2, 2, 1, 17, 16, False, None, 4, "fp16", id="batch2-kv17-more-splits-than-tiles"),
    pytest.param(1, 4, 1, 5, 130, 32, True, (20, 0), 2, "fp16", id="sliding-window"),
    pytest.param(1, 4, 4, 1, 1, 128, False, None, None, "bf16", id="kv-length-1"),
    pytest.param(1, 4, 1, 16, 300, 64, True, None, 5, "bf16", id="q16-gqa4-bf16"),
    pytest.param(1, 1, 1, 20, 7, 16, True, None, None, "fp16", id="causal-empty-rows"),
]


@pytest.mark.parametrize("batch,q_heads,kv_heads,q_len,kv_len,head_dim,causal,window,splits,dtype", CASES)
def test_decode_kernel_equals_softmax_attention(poisoned, batch, q_heads, kv_heads, q_len, kv_len,
                                                head_dim, causal, window, splits, dtype):
    q, k, v = make_qkv(batch, q_heads, kv_heads, q_len, kv_len, head_dim, dtype)
    block_m = 64 if q_heads // kv_heads * q_len > 32 else 16
    config = cfg.DecodeConfig(BLOCK_M=block_m, BLOCK_N=16, num_warps=4, num_stages=1, NUM_SPLITS=splits)
    out, lse = decode_attention(q, k, v, causal=causal, window=window, config=config)
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == q.shape[:3]
    assert_matches_reference(out, lse, q, k, v, causal=causal, window=window)


@pytest.mark.parametrize("q_len,head_dim,causal", [(1, 80, False), (3, 64, True)])
def test_decode_through_tensor_descriptors_equals_softmax_attention(poisoned, q_len, head_dim, causal):
    q, k, v = make_qkv(1, 4, 1, q_len, 100, head_dim, "fp16", seed=2)
    config = cfg.DecodeConfig(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=2, NUM_SPLITS=2,
                              USE_TMA=True)
    out, lse = decode_attention(q, k, v, causal=causal, config=config)
    assert_matches_reference(out, lse, q, k, v, causal=causal)


def test_decode_packs_a_gqa_group_into_one_tile_with_the_default_config():
    q, k, v = make_qkv(1, 8, 2, 2, 100, 64, "fp16", seed=3)
    p = decode_problem(batch=1, q_heads=8, kv_heads=2, q_len=2, kv_len=100, head_dim=64)
    assert cfg.packed_rows(p) == 8 and cfg.row_tiles(p, cfg.default_config(p)) == 1
    out, lse = decode_attention(q, k, v)
    assert_matches_reference(out, lse, q, k, v)


@pytest.mark.skipif(DEVICE != "cuda", reason="real sizes need a GPU")
@pytest.mark.parametrize("kv_len", [4096, 65536 + 17])
def test_decode_kernel_at_real_size(kv_len):
    q, k, v = make_qkv(2, 32, 8, 1, kv_len, 128, "bf16")
    out, lse = decode_attention(q, k, v)
    assert_matches_reference(out, lse, q, k, v)


# --- split count: wave efficiency over the SMs --------------------------------------------------

H100 = DeviceLimits.h100()


def test_many_kv_groups_need_few_splits_to_fill_the_slots():
    p = decode_problem()  # batch 16 x 16 heads: 256 programs before splitting
    config = cfg.default_config(p)
    splits = cfg.choose_num_splits(p, config, H100)
    slots = H100.sm_count * cfg.programs_per_sm(config, p, H100)
    assert splits <= 4 and cfg.wave_efficiency(256 * splits, slots) >= 0.9


def test_one_long_sequence_is_split_to_fill_every_sm():
    p = decode_problem(batch=1, q_heads=32, kv_heads=8, kv_len=65536)
    config = cfg.default_config(p)
    splits = cfg.choose_num_splits(p, config, H100)
    slots = H100.sm_count * cfg.programs_per_sm(config, p, H100)
    assert cfg.wave_efficiency(8 * splits, slots) >= 0.95 and 8 * splits >= 0.95 * slots


def test_short_caches_are_not_split_below_a_few_tiles():
    p = decode_problem(batch=1, kv_heads=1, q_heads=1, kv_len=300)
    config = cfg.DecodeConfig(BLOCK_N=64)
    assert cfg.choose_num_splits(p, config, H100) == 1


def test_fewer_sms_mean_fewer_splits():
    p = decode_problem(batch=1, q_heads=8, kv_heads=8, kv_len=65536)
    config = cfg.default_config(p)
    small = dataclasses.replace(H100, sm_count=8)
    assert cfg.choose_num_splits(p, config, small) < cfg.choose_num_splits(p, config, H100)


def test_split_plan_covers_the_visible_keys_exactly_once():
    for kv_len, splits in ((300, 3), (17, 4), (65536 + 5, 37)):
        p = decode_problem(kv_len=kv_len)
        config = cfg.DecodeConfig(BLOCK_N=16, NUM_SPLITS=splits)
        plan = cfg.split_plan(p, config, H100)
        assert plan.split_len % 16 == 0
        assert (plan.num_splits - 1) * plan.split_len < kv_len <= plan.num_splits * plan.split_len


# --- traffic -----------------------------------------------------------------------------------

def test_decode_traffic_is_one_read_of_the_cache_plus_small_partials():
    p = decode_problem()
    config = cfg.DecodeConfig(NUM_SPLITS=4)
    split, merge = cfg.pass_traffic(p, config, H100)
    cache = p.batch * p.kv_heads * p.kv_len * p.head_dim * 2
    assert split.reads["K"] == split.reads["V"] == cache
    partials = p.batch * p.kv_heads * 4 * 1 * (p.head_dim + 2) * cfg.STATS_BYTES
    assert sum(split.writes.values()) == sum(merge.reads.values()) == partials
    assert cfg.hbm_bytes(p, config, H100) / cfg.min_bytes(p) < 1.01


def test_decode_is_registered_with_its_cascade():
    from einsim.kernels.registry import KERNELS

    spec = KERNELS["decode"]
    p = decode_problem()
    assert spec.cascade == "decode-splitkv"
    assert spec.hbm_bytes(p, spec.default_config(p)) >= spec.min_bytes(p)


def test_window_limits_the_keys_read():
    p = decode_problem(window=(1023, 0), causal=True)
    assert cfg.key_range(p) == (16384 - 1 - 1023, 16384)


# --- configs and bad input ----------------------------------------------------------------------

def test_default_config_and_search_space_fit_an_h100():
    for head_dim in (16, 64, 80, 128, 256):
        for q_heads, q_len in ((1, 1), (8, 4), (32, 16)):
            p = decode_problem(head_dim=head_dim, q_heads=q_heads, kv_heads=1, q_len=q_len)
            assert cfg.check_config(cfg.default_config(p), p, H100) == []
            assert all(cfg.check_config(c, p, H100) == [] for c in cfg.search_space(p, H100))


def test_config_that_overflows_shared_memory_is_rejected():
    p = decode_problem(head_dim=256)
    too_big = cfg.DecodeConfig(BLOCK_N=256, num_stages=4)
    assert any("shared memory" in r for r in cfg.check_config(too_big, p, H100))
    q, k, v = make_qkv(1, 1, 1, 1, 4, 256, "fp16")
    with pytest.raises(ConfigError, match="shared memory"):
        decode_attention(q, k, v, config=too_big)


def test_bad_input_raises_before_launch():
    q, k, v = make_qkv(1, 4, 2, 1, 8, 64, "fp16")
    with pytest.raises(ShapeError, match="multiple of key/value heads"):
        decode_attention(q[:, :3], k, v)
    with pytest.raises(ShapeError, match="dtype"):
        decode_attention(q.float(), k.float(), v.float())
    shifted = torch.empty(k.numel() + 1, dtype=k.dtype, device=k.device)[1:].view(k.shape)
    shifted.copy_(k)  # same values, address 2 bytes off the 16-byte grid
    with pytest.raises(ConfigError, match="16-byte aligned"):
        decode_attention(q, shifted, v, config=cfg.DecodeConfig(USE_TMA=True))
    with pytest.raises(ConfigError, match="NUM_SPLITS"):
        decode_attention(q, k, v, config=cfg.DecodeConfig(NUM_SPLITS=0))
    long_q, k2, v2 = make_qkv(1, 1, 1, 200, 8, 64, "fp16")
    with pytest.raises(ConfigError, match="q_len"):
        decode_attention(long_q, k2, v2)
    assert runtime.interpreting() or DEVICE == "cuda"


def test_kernels_show_reads_decode_shapes_as_one_query_against_the_cache(capsys):
    """`einsim kernels show decode --shape B,H,N,D`: N is the KV-cache length, one query row."""
    import json

    from einsim.cli import main

    assert main(["kernels", "show", "decode", "--shape", "8,32,8192,128", "--kv-heads", "8", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert "Nq=1 Nk=8192" in shown["problem"]
    assert shown["search_space_size"] > 0
