"""The analytical model of a cascade on a spatial accelerator (a 2D PE array, a 1D PE array, a
global buffer, DRAM): per-array work, buffer need and spills, traffic, latency, energy.

Every formula carries the section of docs/simulator.md that explains it and gives its source.
`Design` (design.py) compiles everything that does not depend on the searched mapping parameters
once; its evaluation (evaluate.py: the resident model in resident.py, FLAT's staging in
staging.py, the schedule in schedule.py, per-point costs in costs.py) is vectorised over query
blocks and buffer capacities, so the mapping search (search.py), `--buffer-sweep` and sweeps of
many mapping points are a few numpy operations each; report.py turns a choice into an Estimate.
"""

from __future__ import annotations

from functools import lru_cache

from einsim.einsum_cascades.ir import Cascade
from einsim.einsum_cascades.passes import PassReport, analyze_passes
from einsim.errors import ConfigError
from einsim.simulator.estimate import Estimate
from einsim.simulator.mapping import Mapping
from einsim.simulator.spatial.defaults import resolve_mapping
from einsim.simulator.spatial.costs import compute_energy_per_point, cycles_per_point
from einsim.simulator.spatial.design import Design
from einsim.simulator.spatial.masks import visible_tile_fraction
from einsim.problem import Problem

__all__ = ["Design", "compile_design", "compute_energy_per_point", "cycles_per_point", "simulate_spatial",
           "visible_tile_fraction"]


def simulate_spatial(cascade: Cascade, problem: Problem, target, mapping: Mapping | None = None) -> Estimate:
    """The Estimate of `cascade` for `problem` on a spatial `target` (docs/simulator.md)."""
    if "M" in cascade.ranks and "P" not in cascade.ranks:
        # without P the workload's queries bind nothing: a GEMM here would be costed as one
        # column of the 2D array (0.4 % busy) and its M read as the K/V length
        raise ConfigError(
            f"{cascade.source}: {cascade.name} has no query rank P (ranks: {', '.join(cascade.ranks)}); a workload "
            "simulates attention-shaped cascades (K/V rank M streamed past query rows P kept on chip). "
            "For a GEMM use einsim.simulator.layer.simulate_linear((name, K, N), tokens, target), "
            "or einsim.simulator.layer.simulate_layer for a whole layer")
    design = compile_design(cascade, problem, target, mapping or Mapping())
    return design.estimate(design.choose())


def compile_design(cascade: Cascade, problem: Problem, target, mapping: Mapping, key_rank: str = "M",
                   query_rank: str = "P", sizes: dict[str, int] | None = None) -> Design:
    """The user's mapping resolved against the design's defaults, compiled (§2)."""
    if key_rank not in cascade.ranks:  # a missing query rank is fine: a GEMM's rows are one block
        # the pass analysis would say only "unknown rank 'M'"; say what the model needs and why
        layer = " (a whole layer's FFN: einsim.simulator.layer.simulate_layer, which runs the gemm cascade)" \
            if cascade.name.startswith("ffn") else ""
        raise ConfigError(
            f"{cascade.source}: {cascade.name} has no rank {key_rank} (ranks: {', '.join(cascade.ranks)}); "
            f"the spatial model streams the key rank {key_rank} (attention's K/V length, a GEMM's output features) "
            f"past rows of the query rank {query_rank} kept on chip: name the streamed rank {key_rank}, "
            f"or simulate it on a GPU target{layer}")
    report = _passes(cascade, key_rank)
    resolved = resolve_mapping(mapping, cascade, target, report, problem)
    return Design(cascade, problem, target, resolved, report, query_rank, sizes)


@lru_cache(maxsize=256)
def _passes(cascade: Cascade, key_rank: str) -> PassReport:
    return analyze_passes(cascade, key_rank)


