"""Analytical model of a cascade on a hardware target: passes, buffer, traffic, compute, latency
and energy per Einsum and for the whole cascade."""
