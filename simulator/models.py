"""Model presets (simulator/models/*.yaml): the FuseMax paper's BERT/TrXL/T5/XLM and current LLMs,
turned into one attention layer's Problem for a sequence length in prefill or decode mode."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any


from einsim.errors import ShapeError, SpecError, brief, did_you_mean
from einsim.files import is_file
from einsim.targets.loader import read_yaml_file
from einsim.problem import DTYPE_BYTES, Problem

MODEL_DIR = Path(__file__).resolve().parent / "models"
MODES = ("prefill", "decode")
# The FuseMax paper's sweep: 1K to 1M tokens (its Figures 6-9).
PAPER_SEQ_LENS = (1024, 4096, 16384, 65536, 262144, 1048576)

_REQUIRED = ("name", "hidden", "heads", "head_dim", "ffn", "batch")
_OPTIONAL = ("description", "display_name", "kv_heads", "v_head_dim", "ffn_matrices", "layers", "causal", "window", "dtype", "vocab",
             "sources")


@dataclass(frozen=True)
class ModelPreset:
    """A transformer's attention-relevant shape (one layer; all layers are alike)."""

    name: str
    hidden: int
    heads: int
    head_dim: int
    ffn: int
    batch: int  # default batch (64 in the FuseMax paper's runs, 1 for the LLM presets)
    kv_heads: int | None = None  # GQA when fewer than heads
    v_head_dim: int | None = None
    ffn_matrices: int = 2  # 2 for a plain MLP, 3 for gated (SwiGLU) FFNs
    layers: int = 1
    causal: bool = False
    window: tuple[int, int] | None = None  # (left, right), einsim's convention
    dtype: str = "bf16"  # the element type of activations, KV cache and weights
    vocab: int | None = None  # vocabulary size: the embedding and the LM head of whole-model estimates
    description: str = ""
    sources: tuple[str, ...] = ()
    display_name: str = ""  # what figures call it ("Llama 3 8B"); `label` falls back to name

    @property
    def label(self) -> str:
        return self.display_name or self.name

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    def problem(self, seq_len: int, mode: str = "prefill", batch: int | None = None) -> Problem:
        """One attention layer: prefill attends seq_len queries to seq_len keys; decode one new
        query to a KV cache of seq_len keys (bottom-right aligned, so causal/window still apply)."""
        if mode not in MODES:
            raise ShapeError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
            raise ShapeError(f"seq_len must be a positive integer, got {seq_len!r}")
        return Problem(
            batch=self.batch if batch is None else batch,
            q_heads=self.heads,
            kv_heads=self.kv_heads,
            q_len=seq_len if mode == "prefill" else 1,
            kv_len=seq_len,
            head_dim=self.head_dim,
            v_head_dim=self.v_head_dim,
            causal=self.causal,
            window=self.window,
            dtype=self.dtype,
            name=f"{self.name}/{mode}/{seq_len}",
            # the layer's widths, bound by the rest-of-layer cascades (ffn.yaml: hidden, ffn_dim)
            symbols={"hidden": self.hidden, "ffn_dim": self.ffn},
        )

    def linear_macs_per_token(self) -> int:
        """MACs of one layer's non-attention matmuls per token, for end-to-end estimates:
        Q, K, V and output projections plus the FFN (2 or 3 matrices of hidden x ffn)."""
        q_out = self.heads * self.head_dim
        kv_out = self.key_value_heads * (self.head_dim + (self.v_head_dim or self.head_dim))
        out_proj = self.heads * (self.v_head_dim or self.head_dim) * self.hidden
        return self.hidden * (q_out + kv_out) + out_proj + self.ffn_matrices * self.hidden * self.ffn

    def linear_weight_bytes(self) -> int:
        """Bytes of one layer's projection and FFN weights (what decode must read per step)."""
        return self.linear_macs_per_token() * DTYPE_BYTES[self.dtype]


def model_names() -> list[str]:
    """The shipped presets in a stable order (paper models first)."""
    names = [path.stem for path in MODEL_DIR.glob("*.yaml")]
    paper = [n for n in ("BERT", "TrXL", "T5", "XLM") if n in names]
    return paper + sorted(n for n in names if n not in paper)


def load_model(name: str) -> ModelPreset:
    """A preset by name (case-insensitive: `bert` finds BERT) or a YAML file by path."""
    text = str(name)
    by_lower = {n.lower(): n for n in model_names()}
    if text.lower() in by_lower:
        canonical = by_lower[text.lower()]
        return _load(str(MODEL_DIR / f"{canonical}.yaml"), f"simulator/models/{canonical}.yaml")
    path = Path(text)
    if path.suffix in (".yaml", ".yml") and is_file(path):
        return _load(str(path.resolve()), text)
    raise SpecError(f"unknown model {brief(text)}{did_you_mean(text, model_names())}: expected one of {', '.join(model_names())} or a path to a model YAML file")


@lru_cache(maxsize=32)
def _load(resolved: str, shown: str) -> ModelPreset:
    return parse_model(read_yaml_file(resolved, shown), shown)


def parse_model(document: Any, source: str = "<model>") -> ModelPreset:
    """Validate a model document into a ModelPreset (SpecError names the file and field)."""

    def fail(field: str, expected: str, got: Any) -> None:
        raise SpecError(f"{source}: {field}: expected {expected}, got {got!r}")

    if not isinstance(document, dict):
        fail("(top level)", "a mapping", document)
    for key in document:
        if key not in _REQUIRED + _OPTIONAL:
            fail(str(key), f"one of the known fields ({', '.join(_REQUIRED + _OPTIONAL)}){did_you_mean(key, _REQUIRED + _OPTIONAL)}", key)
    for key in _REQUIRED:
        if key not in document:
            raise SpecError(f"{source}: {key}: expected this required field, got nothing (missing)")

    def positive(field: str, default: Any = None) -> Any:
        value = document.get(field, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            fail(field, "a positive integer", value)
        return value

    if not isinstance(document["name"], str) or not document["name"]:
        fail("name", "a non-empty string", document["name"])
    heads, kv_heads = positive("heads"), positive("kv_heads")
    if kv_heads is not None and heads % kv_heads:
        fail("kv_heads", f"a divisor of heads ({heads})", kv_heads)
    causal = document.get("causal", False)
    if not isinstance(causal, bool):
        fail("causal", "true or false", causal)
    window = document.get("window")
    if window is not None:
        if not (isinstance(window, list) and len(window) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in window)):
            fail("window", "[left, right] with non-negative integers", window)
        window = (window[0], window[1])
    ffn_matrices = positive("ffn_matrices", 2)
    if ffn_matrices not in (2, 3):
        fail("ffn_matrices", "2 (MLP) or 3 (gated, SwiGLU)", ffn_matrices)
    dtype = document.get("dtype", "bf16")
    if dtype not in DTYPE_BYTES:
        fail("dtype", f"one of {', '.join(DTYPE_BYTES)}", dtype)
    sources = document.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        fail("sources", "a list of strings", sources)
    return ModelPreset(
        name=document["name"],
        hidden=positive("hidden"),
        heads=heads,
        head_dim=positive("head_dim"),
        ffn=positive("ffn"),
        batch=positive("batch"),
        kv_heads=kv_heads,
        v_head_dim=positive("v_head_dim"),
        ffn_matrices=ffn_matrices,
        layers=positive("layers", 1),
        causal=causal,
        window=window,
        dtype=dtype,
        vocab=positive("vocab"),
        description=str(document.get("description", "")),
        sources=tuple(sources),
        display_name=_display_name(document, fail),
    )


def _display_name(document: dict, fail: Any) -> str:
    value = document.get("display_name", "")
    if not isinstance(value, str) or ("display_name" in document and not value.strip()):
        fail("display_name", "a non-empty string (the name figures show)", value)
    return value.strip()


def workload_title(problem: Problem) -> str:
    """A human title for a workload: 'BERT-base, prefill, 4096 tokens' for a problem a preset made
    (its name is MODEL/MODE/LENGTH, ModelPreset.problem), else the problem's own name or shape."""
    parts = (problem.name or "").split("/")
    if len(parts) == 3 and parts[1] in MODES and parts[2].isdigit() and parts[0] in model_names():
        model, mode, length = load_model(parts[0]), parts[1], int(parts[2])
        if mode == "prefill":
            return f"{model.label}, prefill, {length} tokens, batch {problem.batch}"
        return f"{model.label}, decode, {length}-token KV cache, batch {problem.batch}"
    return problem.name or problem.describe()
