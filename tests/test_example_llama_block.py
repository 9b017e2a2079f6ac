"""docs/examples/llama_block.py runs (tiny sizes, Triton's interpreter on the CPU; the real sizes
and the CUDA graph on a GPU) and matches the same block run with torch SDPA."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "llama_block.py"


def load_example():
    spec = importlib.util.spec_from_file_location("llama_block_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llama_block_example_matches_sdpa_at_tiny_sizes():
    errors = load_example().main(["--tiny", "--steps", "2"])
    assert set(errors) == {"prefill", "decode"}
    assert errors["prefill"] < 2e-2 and errors["decode"] < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_llama_block_example_on_the_gpu_with_a_cuda_graph():
    errors = load_example().main(["--steps", "4"])
    assert errors["prefill"] < 5e-2 and errors["decode"] < 5e-2
