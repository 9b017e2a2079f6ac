"""Serving decode (`decode-paged`): per-sequence cache lengths, paged KV cache, GQA, several
query tokens, stream-K split — against the float64 oracle's torch twin per sequence, with every
scratch and output element poisoned; the schedule's balance; the input checks; on a GPU, a
CUDA-graph capture replayed after the lengths and block table change in place (marked gpu)."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from einsim.einsum_cascades.reference import attention_reference_torch  # noqa: E402
from einsim.errors import ConfigError, ShapeError  # noqa: E402
from einsim.kernels.decode import config as cfg  # noqa: E402
from einsim.kernels.decode.forward import decode_paged  # noqa: E402
from einsim.problem import Problem  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and not os.environ.get("TRITON_INTERPRET") else "cpu"


def serving_inputs(batch, q_heads, kv_heads, q_len, capacity, head_dim, lengths, causal,
                   page_size, dtype="fp16", seed=0):
    problem = Problem(batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len,
                      kv_len=capacity, head_dim=head_dim, causal=causal, dtype=dtype)
    return cfg.make_paged_inputs(problem, device=DEVICE, seed=seed, page_size=page_size,
                                 cache_seqlens=lengths)


def assert_matches_per_sequence(out, lse, data, lengths, causal):
    assert not torch.isnan(out).any() and not torch.isnan(lse).any(), "unwritten output"
    for b, length in enumerate(lengths):
        if length == 0:
            assert (out[b] == 0).all() and torch.isneginf(lse[b]).all()
            continue
        ref_out, ref_lse = attention_reference_torch(
            data["q"][b:b + 1], data["k"][b:b + 1, :, :length], data["v"][b:b + 1, :, :length],
            causal=causal, dtype=torch.float64)
        tolerance = 2e-2 if data["q"].dtype == torch.bfloat16 else 4e-3
        assert (out[b:b + 1].double() - ref_out).abs().max().item() < tolerance
        finite = torch.isfinite(ref_lse)
        assert torch.equal(torch.isfinite(lse[b:b + 1]), finite)
        if finite.any():
            assert (lse[b:b + 1].double()[finite] - ref_lse[finite]).abs().max().item() < 1e-2


# (batch, q_heads, kv_heads, q_len, capacity, head_dim, lengths, causal, page_size, programs, paged, dtype)
CASES = [
    pytest.param(3, 4, 2, 1, 70, 16, [70, 5, 33], False, 16, 4, True, "fp16", id="unequal-paged"),
    pytest.param(3, 4, 2, 2, 70, 16, [0, 70, 17], True, 8, 7, True, "fp16",
                 id="speculative2-causal-empty-sequence"),
    pytest.param(2, 8, 2, 3, 40, 32, [40, 2], True, 16, 3, False, "bf16", id="contiguous-causal"),
    pytest.param(4, 2, 1, 1, 100, 80, [1, 99, 50, 0], False, 32, 6, True, "fp16",
                 id="d80-page32-tile-inside-a-page"),
    pytest.param(2, 4, 2, 2, 50, 16, [50, 13], True, 12, 3, True, "fp16",
                 id="page12-not-a-power-of-two"),
]


@pytest.mark.parametrize(
    "batch,q_heads,kv_heads,q_len,capacity,head_dim,lengths,causal,page_size,programs,paged,dtype",
    CASES)
def test_serving_decode_equals_attention_per_sequence(poisoned, batch, q_heads, kv_heads, q_len,
                                                      capacity, head_dim, lengths, causal,
                                                      page_size, programs, paged, dtype):
    data = serving_inputs(batch, q_heads, kv_heads, q_len, capacity, head_dim, lengths, causal,
                          page_size, dtype)
    config = cfg.PagedDecodeConfig(BLOCK_N=16, num_warps=4, num_stages=1, PROGRAMS=programs)
    if paged:
        out, lse = decode_paged(data["q"], data["k_cache"], data["v_cache"], data["cache_seqlens"],
                                data["block_table"], causal=causal, config=config)
    else:
        out, lse = decode_paged(data["q"], data["k"], data["v"], data["cache_seqlens"],
                                causal=causal, config=config)
    assert out.shape == data["q"].shape and lse.shape == data["q"].shape[:3]
    assert_matches_per_sequence(out, lse, data, lengths, causal)


def test_lengths_change_without_a_new_plan(poisoned):
    from einsim.kernels.decode.forward import PAGED_PLANS

    data = serving_inputs(2, 2, 1, 1, 48, 16, [48, 3], False, 16)
    config = cfg.PagedDecodeConfig(BLOCK_N=16, num_warps=4, num_stages=1, PROGRAMS=3)
    args = (data["q"], data["k_cache"], data["v_cache"], data["cache_seqlens"], data["block_table"])
    decode_paged(*args, config=config)
    misses = PAGED_PLANS.misses
    data["cache_seqlens"].copy_(torch.tensor([7, 48], dtype=torch.int32))
    out, lse = decode_paged(*args, config=config)
    assert PAGED_PLANS.misses == misses
    assert_matches_per_sequence(out, lse, data, [7, 48], False)


@pytest.mark.parametrize("lengths", [[131072] + [100] * 63, [4096] * 64, [1] * 7 + [65536]])
def test_stream_k_schedule_is_balanced_and_covers_every_tile(lengths):
    programs, segments, block_n = 264, 8, 64
    pieces = cfg.stream_k_pieces(lengths, segments, block_n, programs)
    per_program = [sum(tiles for _, _, tiles in p) for p in pieces]
    total = sum(-(-n // block_n) * segments for n in lengths)
    assert sum(per_program) == total
    assert max(per_program) == -(-total // min(programs, -(-total // cfg.MIN_TILES_PER_SPLIT)))
    covered = {}
    for p in pieces:
        for segment, first, tiles in p:
            for tile in range(first, first + tiles):
                assert (segment, tile) not in covered
                covered[(segment, tile)] = True
    assert len(covered) == total


def test_automatic_grid_fills_every_sm_once():
    problem = Problem(batch=64, q_heads=32, kv_heads=8, q_len=1, kv_len=4096, head_dim=128)
    config = cfg.paged_default_config(problem)
    limits = cfg.DeviceLimits.h100()
    per_sm = cfg.programs_per_sm(cfg.DecodeConfig(BLOCK_M=16, BLOCK_N=config.BLOCK_N,
                                                  num_warps=config.num_warps,
                                                  num_stages=config.num_stages), problem, limits)
    assert cfg.paged_programs(problem, config, limits) == limits.sm_count * per_sm >= 132


def test_bad_serving_inputs_are_named():
    data = serving_inputs(2, 4, 2, 1, 32, 16, [32, 4], False, 16)
    q, kc, vc, lens, table = (data[n] for n in ("q", "k_cache", "v_cache", "cache_seqlens",
                                                "block_table"))
    with pytest.raises(ShapeError, match="cache_seqlens must be int32"):
        decode_paged(q, kc, vc, lens.long(), table)
    with pytest.raises(ShapeError, match="block_table must be an int32"):
        decode_paged(q, kc, vc, lens, table.long())
    with pytest.raises(ShapeError, match="multiple of the cache's key/value heads"):
        decode_paged(q[:, :3], kc, vc, lens, table)
    with pytest.raises(ShapeError, match="head dims differ"):
        decode_paged(q[..., :8], kc, vc, lens, table)
    with pytest.raises(ConfigError, match="BLOCK_N=48"):
        decode_paged(q, kc, vc, lens, table, config=cfg.PagedDecodeConfig(BLOCK_N=48))


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
def test_cuda_graph_replays_after_lengths_and_pages_change():
    data = serving_inputs(8, 32, 8, 1, 4096, 128, [4096, 17, 1000, 0, 2048, 3000, 1, 4000],
                          False, 16, dtype="bf16")
    args = [data[n] for n in ("q", "k_cache", "v_cache", "cache_seqlens", "block_table")]
    decode_paged(*args)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out, static_lse = decode_paged(*args)
    new_lengths = [10, 4096, 0, 333, 4095, 64, 2000, 1]
    data["cache_seqlens"].copy_(torch.tensor(new_lengths, dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    assert_matches_per_sequence(static_out, static_lse, data, new_lengths, False)


def test_a_problem_with_per_sequence_lengths_counts_each_sequence():
    lens = (5, 0, 33)
    p = Problem(batch=3, q_heads=4, kv_heads=2, q_len=1, kv_len=40, head_dim=16, kv_lens=lens)
    alone = [Problem(batch=1, q_heads=4, kv_heads=2, q_len=1, kv_len=n, head_dim=16) for n in (5, 33)]
    assert p.forward_flops() == sum(a.forward_flops() for a in alone)
    q_only = 4 * 1 * (16 + 16) * 2 + 4 * 4  # the empty sequence still reads Q, writes O and lse
    assert p.forward_min_bytes() == sum(a.forward_min_bytes() for a in alone) + q_only
    assert Problem.from_dict(p.to_dict()) == p and "kv_lens=0..33" in p.describe()
    with pytest.raises(ShapeError, match="kv_lens must list 3 cache lengths"):
        Problem(batch=3, q_heads=4, q_len=1, kv_len=40, head_dim=16, kv_lens=(5, 41, 1))


def test_the_gpu_model_prices_stream_k_by_its_balanced_equivalent_and_dense_decode_refuses():
    from einsim.autotune.predict import balanced_equivalent, predict_kernel

    lens = tuple([16384] + [256] * 63)
    p = Problem(batch=64, q_heads=32, kv_heads=8, q_len=1, kv_len=16384, head_dim=128, kv_lens=lens)
    config = cfg.paged_default_config(p)
    tiles = -(-16384 // config.BLOCK_N) + 63 * -(-256 // config.BLOCK_N)
    assert balanced_equivalent(p, config).kv_len == -(-tiles // 64) * config.BLOCK_N
    assert predict_kernel("decode-paged", config, p, "h200").fits
    refused = predict_kernel("decode", cfg.default_config(p), p, "h200")
    assert not refused.fits and "use decode-paged" in refused.reasons[-1]


def test_registry_inputs_and_reference_follow_the_problems_lengths(poisoned):
    from einsim.kernels.registry import get_kernel

    spec = get_kernel("decode-paged")
    p = Problem(batch=3, q_heads=4, kv_heads=2, q_len=2, kv_len=40, head_dim=16, causal=True,
                dtype="fp16", kv_lens=(40, 0, 9))
    inputs = spec.make_inputs(p, device=DEVICE, page_size=8)
    assert inputs["cache_seqlens"].tolist() == [40, 0, 9]
    out, lse = spec.launch(cfg.PagedDecodeConfig(BLOCK_N=16, num_stages=1, PROGRAMS=3), inputs)
    ref_out, ref_lse = spec.reference(inputs)
    assert (out.float() - ref_out).abs().max().item() < 4e-3
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))


def test_per_key_page_lookup_gives_the_same_answer(poisoned):
    data = serving_inputs(2, 4, 2, 1, 70, 16, [70, 21], False, 8)
    args = [data[n] for n in ("q", "k_cache", "v_cache", "cache_seqlens", "block_table")]
    whole = decode_paged(*args, config=cfg.PagedDecodeConfig(BLOCK_N=16, num_stages=1, PROGRAMS=3))
    per_key = decode_paged(*args, config=cfg.PagedDecodeConfig(BLOCK_N=16, num_stages=1, PROGRAMS=3,
                                                               PER_KEY_PAGES=True))
    assert torch.equal(whole[0], per_key[0]) and torch.equal(whole[1], per_key[1])
    assert_matches_per_sequence(*per_key, data, [70, 21], False)
