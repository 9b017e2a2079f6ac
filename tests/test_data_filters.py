"""Filters that read data (packed documents' ids, a block mask) priced from their values in both
simulators: the tiles they empty cost no work, no K/V traffic and no live state, exactly as the
values say (docs/simulator.md § Filters that read data). Expected tile counts are written from the
documents' and blocks' own layout here, not from einsum_cascades.tiles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from einsim.einsum_cascades import load_cascade
from einsim.einsum_cascades import tile_grid
from einsim.einsum_cascades.tiles import classify_tiles
from einsim.filter_inputs import Documents, FilterInputs
from einsim.problem import Problem
from einsim.simulator.gpu_cost.attention import _key_walks
from einsim.simulator.gpu_cost.cascade_plan import tile_mask
from einsim.simulator.gpu_cost.data_mask import DataMask
from einsim.simulator.gpu_cost.model import kernel_cost
from einsim.simulator.simulate import resolve_target, simulate

N = 4096
PROBLEM = Problem(batch=2, q_heads=4, q_len=N, kv_len=N, head_dim=64)
FIXED_1024 = Documents(1024, lengths="fixed")


def _documents_visited(q_len: int, block: int, doc: int) -> np.ndarray:
    """Key tiles a query tile of fixed-length documents visits: its document's tiles up to the
    diagonal (document length a multiple of the tile)."""
    tiles = np.arange(q_len // block)
    return tiles - (tiles * block // doc) * (doc // block) + 1


def test_packed_documents_visit_their_own_documents_tiles_on_the_gpu():
    problem = replace(PROBLEM, filter_inputs=FIXED_1024)
    mask = tile_mask(load_cascade("packed-documents"), problem)
    assert isinstance(mask, DataMask)
    counts = mask.tile_counts(128, 128)
    assert counts.copies == 2  # the ids differ per batch element, not per head
    expected = _documents_visited(N, 128, 1024)
    np.testing.assert_array_equal(counts.visited, np.tile(expected, 2))
    assert counts.exact_pairs == 4 * 1024 * 1025 / 2  # four causal documents of 1024
    documents = simulate("packed-documents", problem, "h200").latency_s
    causal = simulate("attention-causal", replace(PROBLEM, causal=True), "h200").latency_s
    assert documents < 0.5 * causal


def test_a_block_mask_per_head_is_timed_copy_by_copy_and_reads_only_its_key_tiles():
    blocks = np.zeros((2, 4, N // 64, N // 64), dtype=np.int8)
    blocks[:, :2] = 1  # heads 0 and 1 see everything
    blocks[:, 2:, :, :2] = 1  # heads 2 and 3 only the first two blocks of 64 keys
    problem = replace(PROBLEM, filter_inputs={"BLOCKS": blocks})
    mask = tile_mask(load_cascade("block-sparse"), problem)
    counts = mask.tile_counts(128, 128)
    assert counts.copies == 8 and counts.query_tiles == 32
    per_copy = counts.visited.reshape(2, 4, 32)
    assert (per_copy[:, :2] == 32).all() and (per_copy[:, 2:] == 1).all()
    assert counts.visited_pairs == pytest.approx((2 * 32 + 2 * 1) * 32 / 4)
    assert counts.kv_seen == pytest.approx((2 * 1.0 + 2 * (1 / 32)) / 4)
    sparse = simulate("block-sparse", problem, "h200")
    dense = simulate("block-sparse", replace(PROBLEM, filter_inputs={"BLOCKS": np.ones_like(blocks)}), "h200")
    # half the heads do 1/32 of the work; the full heads' programs still set the makespan here
    assert sparse.compute_ops["mac"] == pytest.approx(dense.compute_ops["mac"] * (2 * 32 + 2) / (4 * 32))
    assert sparse.latency_s <= dense.latency_s and sparse.energy_j < 0.7 * dense.energy_j
    # K and V of the sparse heads: one tile of 128 keys of 4096 read
    kv = 2 * 4 * N * 64 * 2 * 2
    assert dense.traffic_bytes - sparse.traffic_bytes == pytest.approx(kv / 2 * (1 - 1 / 32), rel=0.01)


def test_gqa_dkdv_programs_walk_their_groups_heads():
    blocks = np.zeros((1, 4, N // 64, N // 64), dtype=np.int8)
    blocks[0, 0] = 1  # head 0 sees every block; heads 1..3 only their diagonal blocks
    for head in (1, 2, 3):
        np.fill_diagonal(blocks[0, head], 1)
    problem = Problem(batch=1, q_heads=4, kv_heads=2, q_len=N, kv_len=N, head_dim=64, filter_inputs={"BLOCKS": blocks})
    mask = tile_mask(load_cascade("block-sparse"), problem)
    visited, full, repeats = _key_walks(mask, problem, 128, 128)
    assert repeats == 1 and visited.shape == (2 * 32,)
    # K/V head 0 walks head 0 (every query tile) and head 1 (the diagonal one); head 1: two diagonals
    np.testing.assert_array_equal(visited, np.concatenate([np.full(32, 33), np.full(32, 2)]))
    assert full.sum() == 32 * 32  # head 0's tiles are full, the diagonal ones hold 64 x 64 of 128 x 128


def test_the_compiled_kernels_build_their_block_mask_per_call_and_other_styles_do_not():
    problem = replace(PROBLEM, filter_inputs=FIXED_1024)
    cascade = load_cascade("packed-documents")
    target = resolve_target("h200")
    ours = kernel_cost(cascade, problem, target, {"kernel_style": "einsim"})
    names = [launch.name for launch in ours.launches]
    assert names[:2] == ["block mask: tile classes", "block mask: tile lists"]
    flex = kernel_cost(cascade, problem, target, {"kernel_style": "flex"})
    assert not any(launch.name.startswith("block mask") for launch in flex.launches)
    backward = kernel_cost(cascade, problem, target, {"kernel_style": "einsim"}, "backward")
    assert sum(launch.name == "block mask: tile classes" for launch in backward.launches) == 2  # dK/dV's, dQ's
    prebuilt = kernel_cost(cascade, problem, target, {"kernel_style": "einsim", "block_mask": "prebuilt"})
    assert [launch.name for launch in prebuilt.launches] == names[2:]
    assert prebuilt.time_s == pytest.approx(sum(t.time_s for t in ours.launches[2:]))


def test_a_block_mask_finer_than_the_tiles_is_classified_through_halves(monkeypatch):
    cascade = load_cascade("block-sparse")
    sizes = {"batch": 1, "heads": 2, "q_len": 512, "kv_len": 512}
    rng = np.random.default_rng(3)
    blocks = (rng.random((1, 2, 8, 8)) < 0.4).astype(np.int8)
    direct = classify_tiles(cascade, sizes, 256, 256, {"BLOCKS": blocks})
    monkeypatch.setattr(tile_grid, "REFINE_POINTS", 1)
    halved = classify_tiles(cascade, sizes, 256, 256, {"BLOCKS": blocks})
    np.testing.assert_array_equal(halved.state, direct.state)
    np.testing.assert_array_equal(halved.count, direct.count)
    assert halved.visible_pairs == int(blocks.sum()) * 64 * 64


def test_spatial_designs_skip_the_tiles_the_values_empty():
    problem = replace(PROBLEM, q_heads=2, kv_heads=2, batch=1)
    unknown = simulate("packed-documents", problem, "fusemax-cloud")
    documents = simulate("packed-documents", replace(problem, filter_inputs=FIXED_1024), "fusemax-cloud")
    assert any("classified from documents(mean 1024, fixed" in note for note in documents.notes)
    # 256-key tiles: each document of 1024 holds 4 query tiles visiting 1..4 tiles: 4 x 10 of 16 x 16,
    # and a row keeps at most its document's 4 tiles of 16 live
    assert any("15.6% of the 256 x 256 tiles" in note and "at most 25.0% of the keys" in note for note in documents.notes)
    # the work of 40 tiles instead of the causal 136 (16 x 17 / 2)
    assert documents.compute_ops["exp"] == pytest.approx(unknown.compute_ops["exp"] * 40 / 136, rel=0.02)
    assert documents.latency_s < 0.4 * unknown.latency_s and documents.energy_j < 0.4 * unknown.energy_j


def test_the_cli_takes_the_filters_tensors_as_a_file_or_a_description(tmp_path, capsys):
    from einsim.cli import main

    path = tmp_path / "blocks.npz"
    blocks = np.zeros((1, 2, 16, 16), dtype=np.int8)
    blocks[..., 0] = 1
    np.savez(path, BLOCKS=blocks)
    for tensors in (str(path), "blocks:0.0625"):
        assert main(["simulate", "--cascade", "block-sparse", "--shape", "1,2,1024,64", "--target", "h200",
                     "--tensors", tensors, "--json"]) == 0
        out = capsys.readouterr().out
        assert '"filter_inputs"' in out
    assert main(["simulate", "--cascade", "block-sparse", "--shape", "1,2,1024,64", "--target", "h200",
                 "--tensors", "blocks:2"]) != 0
    assert "density must be a number in (0, 1]" in capsys.readouterr().err


def test_filter_inputs_travel_as_a_problem_field():
    problem = replace(PROBLEM, filter_inputs="documents:512")
    assert isinstance(problem.filter_inputs, FilterInputs)
    assert Problem.from_dict(problem.to_dict()) == problem


def test_estimates_carry_the_pairs_the_filters_keep_and_the_roofline_credits_them():
    from einsim.plots.roofs import attention_flops

    problem = Problem(batch=2, q_heads=3, q_len=512, kv_len=512, head_dim=64, symbols={"sinks": 4, "window": 64})
    p, m = np.meshgrid(np.arange(512), np.arange(512), indexing="ij")
    kept = (m <= p) & ((m < 4) | (m > p - 64))
    estimate = simulate("sinks-window", problem, "h200")
    assert estimate.visible_pairs == 2 * 3 * kept.sum()
    assert attention_flops(problem, estimate.visible_pairs) == 2 * 3 * kept.sum() * 2 * 128
    documents = simulate("packed-documents", replace(problem, filter_inputs=Documents(128, lengths="fixed")), "h200")
    assert documents.visible_pairs == 2 * 3 * 4 * 128 * 129 / 2
    assert simulate("fusemax", problem, "h200").visible_pairs is None  # the problem's mask alone


def test_cascades_tiles_takes_a_description_too(capsys):
    from einsim.cli import main

    assert main(["cascades", "tiles", "packed-documents", "--set", "q_len=1024", "--set", "kv_len=1024",
                 "--tensors", "documents:mean=256,lengths=fixed", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"visible_pairs": 131584' in out  # four causal documents of 256: 4 x 256 x 257 / 2
