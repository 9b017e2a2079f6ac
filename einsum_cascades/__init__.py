"""Einsum cascades: the IR, its YAML notation, the library of attention cascades, pass analysis
and the float64 reference executor."""

from einsim.einsum_cascades.reference import attention_reference, visible_keys

__all__ = ["attention_reference", "visible_keys"]
