"""Analytical model of a cascade on a hardware target: passes, buffer, traffic, compute, latency
and energy per Einsum and for the whole cascade."""

from einsim.simulator.estimate import EinsumEstimate, Estimate
from einsim.simulator.models import ModelPreset, load_model, model_names

__all__ = ["EinsumEstimate", "Estimate", "ModelPreset", "load_model", "model_names"]
