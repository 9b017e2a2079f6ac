"""Layer and model estimates (simulator/gpu_cost/layer.py, simulator/model_estimate.py): every
operator of a decoder layer priced by the one GPU model, the whole model's totals, any target,
the CLI's `--layer` and the layer roofline plot."""

from __future__ import annotations

import json

import pytest

from einsim.cli import main
from einsim.simulator import load_model
from einsim.simulator.gpu_cost import gpu_roofs
from einsim.simulator.model_estimate import estimate_model
from einsim.targets import load_target

LLAMA = load_model("llama3-8b")
H200 = load_target("h200")


def test_a_layer_is_its_operators_and_a_model_its_layers_plus_the_head():
    cost = estimate_model(LLAMA, 4096, H200, "prefill", 1)
    names = [op.name for op in cost.layer.operators]
    assert names == ["norm_1", "q_proj", "k_proj", "v_proj", "rotary_qk", "attention", "o_proj", "residual_1",
                     "norm_2", "gate_proj", "up_proj", "silu_mul", "down_proj", "residual_2"]
    assert cost.layer.time_s == pytest.approx(sum(op.time_s for op in cost.layer.operators))
    assert cost.time_s == pytest.approx(32 * cost.layer.time_s + sum(op.time_s for op in cost.head))
    assert cost.tokens_per_s == pytest.approx(4096 / cost.time_s)
    # every projection and FFN matmul: 2 x tokens x in x out FLOPs
    assert cost.layer.operator("gate_proj").flops == pytest.approx(2 * 4096 * 4096 * 14336)


def test_prefill_matmuls_are_compute_bound_and_decode_matmuls_read_their_weights():
    roofs = gpu_roofs(H200, "bf16")
    prefill = estimate_model(LLAMA, 4096, H200, "prefill", 1).layer.operator("up_proj")
    decode = estimate_model(LLAMA, 4096, H200, "decode", 1).layer.operator("up_proj")
    assert prefill.bound == "tensor_core" and prefill.time_s >= prefill.flops / roofs.matmul_flops
    weights = 4096 * 14336 * 2
    assert decode.bound == "hbm" and decode.time_s >= weights / roofs.hbm_bytes_per_s


def test_memory_is_weights_kv_cache_and_activations():
    cost = estimate_model(LLAMA, 8192, H200, "decode", 4)
    weights = 32 * LLAMA.linear_weight_bytes() + 2 * 128256 * 4096 * 2
    assert cost.weight_bytes == weights and 14e9 < weights < 17e9  # Llama 3 8B in bf16
    assert cost.kv_cache_bytes == 32 * 2 * 4 * 8192 * 8 * 128 * 2
    assert cost.memory_bytes == cost.weight_bytes + cost.kv_cache_bytes + cost.activation_bytes


def test_a_faster_gpu_is_faster_and_a_spatial_target_says_what_it_leaves_out():
    h200 = estimate_model(LLAMA, 4096, H200, "decode", 1)
    a100 = estimate_model(LLAMA, 4096, "a100-80gb", "decode", 1)
    assert a100.time_s > h200.time_s  # decode reads the weights: 2.0 TB/s against 4.25
    spatial = estimate_model(LLAMA, 4096, "fusemax-cloud", "prefill", 1)
    assert [op.kind for op in spatial.layer.operators].count("gemm") == 7
    assert spatial.layer.notes and "not modelled" in spatial.layer.notes[0]


def test_simulate_layer_prints_every_operator_and_the_model(capsys):
    assert main(["simulate", "--target", "h200", "--model", "llama3-8b", "--seq-len", "2048", "--layer"]) == 0
    text = capsys.readouterr().out
    assert "gate_proj" in text and "time to first token" in text and "tokens/s" in text
    assert main(["simulate", "--target", "h200", "--model", "llama3-8b", "--seq-len", "4k", "--mode", "decode",
                 "--layer", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mode"] == "decode" and len(document["operators"]) == 15  # 14 + the LM head
    assert main(["simulate", "--target", "h200", "--shape", "1,32,4k,128", "--layer"]) == 2
    assert "--layer needs a model preset" in capsys.readouterr().err


def test_the_layer_roofline_is_drawn(tmp_path):
    path = tmp_path / "layer.png"
    assert main(["plot", "layer", "--target", "h200", "--model", "llama3-8b", "--seq-len", "1024", "-o",
                 str(path)]) == 0
    assert path.stat().st_size > 10_000


def test_an_ffn_cascade_on_a_gpu_prices_its_matmuls_as_the_layer_does():
    """`simulate --cascade ffn-swiglu` on a GPU: the model preset's hidden and FFN sizes bind D and
    S (the headline's sizes are the simulated ones), and each matmul is the layer model's GEMM."""
    from einsim.simulator.simulate import simulate

    estimate = simulate("ffn-swiglu", LLAMA.problem(512), "h200")
    assert estimate.rank_sizes["D"] == 4096 and estimate.rank_sizes["S"] == 14336
    gate = next(row for row in estimate.per_einsum if row.einsum == "G")
    assert gate.compute_ops["mac"] == pytest.approx(512 * 4096 * 14336)
    layer = estimate_model(LLAMA, 512, H200, "prefill", 1).layer
    assert gate.latency_s == pytest.approx(layer.operator("gate_proj").time_s)
    # an FFN has no key rank: the GPU path never asks for one (it named 'M' as unknown before)
    assert simulate("ffn", LLAMA.problem(4096), "h100-sxm").latency_s > 0
