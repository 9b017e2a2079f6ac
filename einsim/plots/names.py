"""What figures call things: targets and models by the display names of their YAML
(`display_name`), kernels by the names their users know them by, workloads in words. The
identifiers themselves stay in the data (CSV, JSON); only titles and legends use these."""

from __future__ import annotations

from einsim.problem import Problem
from einsim.simulator.models import load_model, model_names, workload_title

# Backends of the benchmark CSVs (benchmarks/bench_attention.py, benchmarks/data/*.csv).
BACKEND_NAMES = {
    "sdpa_flash": "SDPA FlashAttention-2",
    "sdpa_cudnn": "cuDNN SDPA",
    "cudnn": "cuDNN SDPA",
    "sdpa_efficient": "SDPA memory-efficient",
    "flex": "FlexAttention",
    "naive_eager": "eager PyTorch (unfused)",
    "einsim": "einsim",
    "einsim-compiled": "einsim (compiled cascade)",
    "einsim-handwritten": "einsim (hand-written)",
}


def model_label(name: str) -> str:
    """'Llama 3 8B' for llama3-8b: a model preset's display name, else the name as given."""
    return load_model(name).label if name in model_names() else name


def backend_label(backend: str) -> str:
    """A measured kernel's name for a legend: 'FlexAttention' for flex; einsim's kernels
    ('attention-fwd (tuned)', from a tuning database) are prefixed with einsim."""
    if backend in BACKEND_NAMES:
        return BACKEND_NAMES[backend]
    if backend.endswith("(tuned)"):
        return f"einsim {backend}"
    return backend


def workload_label(problem: Problem | None) -> str:
    """'BERT-base, prefill, 4096 tokens, batch 64' for a preset's workload, else its shape."""
    if problem is None:
        return ""
    return workload_title(problem)


def passes_label(passes: int) -> str:
    return f"{passes} pass{'es' if passes != 1 else ''}"
