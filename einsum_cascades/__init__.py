"""Einsum cascades: the IR, its YAML notation, the library of attention cascades, pass analysis
and the float64 reference executor."""

from einsim.einsum_cascades.executor import execute
from einsim.einsum_cascades.ir import Cascade, Einsum, Filter
from einsim.einsum_cascades.loader import library_names, load_cascade, parse_cascade
from einsim.einsum_cascades.passes import LiveTensor, PassReport, analyze_passes
from einsim.einsum_cascades.reference import (attention_reference, attention_reference_torch,
                                              linear_attention_reference, linear_attention_reference_torch,
                                              visible_keys)

__all__ = [
    "Cascade", "Einsum", "Filter", "LiveTensor", "PassReport", "analyze_passes", "attention_reference",
    "attention_reference_torch",
    "execute", "library_names", "linear_attention_reference", "linear_attention_reference_torch", "load_cascade", "parse_cascade",
    "visible_keys",
]
