"""Model presets: the paper's and the LLMs' figures, prefill vs decode, GQA and windows, the
layer widths they bind, and clear errors for unknown names and bad fields."""

from __future__ import annotations

import subprocess
import sys

import pytest

from einsim.errors import ShapeError, SpecError
from einsim.simulator import load_model, model_names
from einsim.simulator.models import PAPER_SEQ_LENS, parse_model

PAPER = {"BERT": (768, 12, 64, 3072), "TrXL": (1024, 16, 64, 4096), "T5": (512, 8, 64, 2048), "XLM": (2048, 16, 128, 8192)}


def test_every_issue_model_is_shipped():
    assert {"BERT", "TrXL", "T5", "XLM", "llama3-8b", "llama3-70b", "mistral-7b"} <= set(model_names())
    assert model_names()[:4] == ["BERT", "TrXL", "T5", "XLM"]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_models_match_the_papers_table(name):
    model = load_model(name)
    assert (model.hidden, model.heads, model.head_dim, model.ffn) == PAPER[name]
    assert model.batch == 64 and not model.causal and model.hidden == model.heads * model.head_dim


def test_llms_have_gqa_and_their_ffn():
    llama8, llama70, mistral = load_model("llama3-8b"), load_model("llama3-70b"), load_model("mistral-7b")
    assert (llama8.heads, llama8.kv_heads, llama8.head_dim, llama8.hidden, llama8.ffn) == (32, 8, 128, 4096, 14336)
    assert (llama70.heads, llama70.kv_heads, llama70.head_dim, llama70.hidden, llama70.ffn) == (64, 8, 128, 8192, 28672)
    assert mistral.window == (4096, 0) and mistral.kv_heads == 8 and mistral.causal
    # ~7B non-embedding parameters for Llama 3 8B: the projections/FFN count is right
    assert 6.5e9 < llama8.linear_macs_per_token() * llama8.layers < 7.5e9


def test_prefill_and_decode_workloads():
    model = load_model("llama3-8b")
    prefill = model.problem(8192)
    assert (prefill.q_len, prefill.kv_len, prefill.q_heads, prefill.kv_heads, prefill.group_size) == (8192, 8192, 32, 8, 4)
    decode = model.problem(8192, mode="decode", batch=16)
    assert (decode.q_len, decode.kv_len, decode.batch) == (1, 8192, 16)
    assert load_model("bert").problem(1024).batch == 64  # names are case-insensitive


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(SpecError) as error:
        load_model("gpt5")
    assert "unknown model 'gpt5'" in str(error.value) and "llama3-8b" in str(error.value) and "BERT" in str(error.value)
    with pytest.raises(ShapeError):
        load_model("BERT").problem(1024, mode="training")


def test_malformed_model_document_names_the_field():
    with pytest.raises(SpecError, match=r"m.yaml: kv_heads: expected a divisor of heads \(32\), got 5"):
        parse_model({"name": "x", "hidden": 1, "heads": 32, "kv_heads": 5, "head_dim": 1, "ffn": 1, "batch": 1}, "m.yaml")
    with pytest.raises(SpecError, match=r"m.yaml: head_dim: expected this required field"):
        parse_model({"name": "x", "hidden": 1, "heads": 32, "ffn": 1, "batch": 1}, "m.yaml")


def test_paper_sweep_is_1k_to_1m():
    assert PAPER_SEQ_LENS[0] == 1024 and PAPER_SEQ_LENS[-1] == 2**20 and len(PAPER_SEQ_LENS) == 6


def test_cli_lists_models():
    result = subprocess.run([sys.executable, "-m", "einsim", "models", "list"], capture_output=True, text=True)
    assert result.returncode == 0 and "llama3-70b" in result.stdout and "XLM" in result.stdout


def test_a_model_binds_its_width_to_the_ffn_cascade_not_the_cascade_defaults():
    from einsim.einsum_cascades import load_cascade

    problem = load_model("llama3-8b").problem(1024)
    bound = load_cascade("ffn").bind(problem.rank_sizes())
    assert (bound["D"], bound["S"]) == (4096, 14336)  # ffn.yaml's defaults are BERT's 768/3072
