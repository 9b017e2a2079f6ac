"""einsim's model on the FuseMax paper's evaluation grid: the paper's five designs (cascade, target,
mapping), every (design, model, length) point run through the simulator, the paper's summary
numbers, its Figure 12 design points and the FLAT paper's headline. simulator/paper_validation.py
puts these beside the paper's figures (docs/validation.md); tests/test_validation_paper.py pins
them.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

import numpy as np

from einsim.simulator.estimate import Estimate
from einsim.simulator.layer import linear_shapes, simulate_linear
from einsim.simulator.mapping import Mapping, load_mapping
from einsim.simulator.models import PAPER_SEQ_LENS, load_model
from einsim.simulator.paper_reference import MODELS, flat_mapping, flat_points, pareto_buffer_bytes
from einsim.simulator.simulate import simulate
from einsim.simulator.spatial import compile_design

# The paper's five designs (its Figure 8 bars): cascade, target (per platform) and mapping.
# FLAT runs the mapping the artifact gives it at each point (FLAT's own explorer's staging,
# stationarity and row block, paper_reference.flat_mapping) on the cloud; "flat-default" is the
# same design with einsim's own FLAT policy (§5.6), the mapping a user gets.
ARTIFACT = "artifact"
DESIGN_SPECS: dict[str, tuple[str, str, Mapping | str]] = {
    "unfused": ("attention-3pass", "unfused-{platform}", Mapping()),
    "flat": ("attention-3pass", "flat-{platform}", ARTIFACT),
    # the 1-pass cascade on FLAT's arrays, softmax still on the 1D array
    "+cascade": ("fusemax", "flat-{platform}", Mapping(dataflow="fusemax", binding_style="flat")),
    # FuseMax's arrays and binding, but no software pipelining across epochs
    "+architecture": ("fusemax", "fusemax-{platform}", Mapping(schedule="sequential")),
    "fusemax": ("fusemax", "fusemax-{platform}", Mapping()),
}
EXTRA_DESIGNS = {"flat-default": ("attention-3pass", "flat-{platform}", Mapping())}
LABELS = {"unfused": "Unfused", "flat": "FLAT", "+cascade": "+Cascade", "+architecture": "+Architecture", "fusemax": "FuseMax",
          "flat-default": "FLAT, einsim's mapping"}


@dataclass(frozen=True)
class Point:
    """One design at one model and length: attention, then the layer's linear layers."""

    attention: Estimate
    linear_latency_s: float
    linear_energy_j: float

    @property
    def layer_latency_s(self) -> float:
        return self.attention.latency_s + self.linear_latency_s

    @property
    def layer_energy_j(self) -> float:
        return self.attention.energy_j + self.linear_energy_j


def run(platform: str = "cloud", designs=tuple(DESIGN_SPECS), models=MODELS, seq_lens=PAPER_SEQ_LENS,
        progress: bool = False) -> dict[tuple[str, str, int], Point]:
    """Our model at every (design, model, length) of the paper's grid."""
    out = {}
    jobs = [(d, m, n) for d in designs for m in models for n in seq_lens]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc=f"paper grid ({platform})", unit="point")
    for design, model_name, seq_len in jobs:
        cascade, target, mapping = design_spec(design, model_name, seq_len, platform)
        model = load_model(model_name)
        problem = model.problem(seq_len)
        attention = simulate(cascade, problem, target, mapping)
        tokens = problem.batch * problem.q_len
        linear = [simulate_linear(shape, tokens, target) for shape in linear_shapes(model)]
        out[(design, model_name, seq_len)] = Point(attention, sum(e.latency_s for e in linear), sum(e.energy_j for e in linear))
    return out


def design_spec(design: str, model: str, seq_len: int, platform: str = "cloud") -> tuple[str, str, Mapping]:
    """The cascade, target and mapping of one design at one point (FLAT: the artifact's mapping
    there, on the cloud; its own policy on the edge, where the paper reports nothing)."""
    cascade, target, mapping = {**DESIGN_SPECS, **EXTRA_DESIGNS}[design]
    if mapping == ARTIFACT:
        mapping = load_mapping(flat_mapping(model, seq_len)) if platform == "cloud" else Mapping()
    return cascade, target.format(platform=platform), mapping


def minimum_buffer_bytes(design: str, model_name: str, seq_len: int, platform: str = "cloud") -> float:
    """On-chip bytes the design needs to run without spilling with one array-width block of
    queries (docs/simulator.md §5.1): FLAT's grows with the sequence length, FuseMax's does not."""
    from einsim.simulator.simulate import resolve_cascade, resolve_target

    cascade, target, mapping = DESIGN_SPECS[design]
    if mapping == ARTIFACT:
        mapping = Mapping(staging="fused")  # FLAT-tile: the block's rows of QK on chip
    target = resolve_target(target.format(platform=platform))
    d = compile_design(resolve_cascade(cascade), load_model(model_name).problem(seq_len), target, mapping)
    result = d.evaluate(np.array([d.mapping.query_tile], dtype=float), "store", np.inf)
    return float(result["buffer_bytes"][0])


def headline(ours: dict, paper_attention: dict | None = None, paper_linear: dict | None = None) -> list[tuple[str, float, float | None]]:
    """(figure, ours, paper) for the paper's summary numbers; the paper's are None off its grid."""
    keys = sorted({(m, n) for _, m, n in ours})
    rows = []

    def mean(values):
        return statistics.fmean(values)

    def both(fn_ours, fn_paper):
        value = mean([fn_ours(k) for k in keys])
        ref = mean([fn_paper(k) for k in keys]) if paper_attention is not None else None
        return value, ref

    o, pa, pl = ours, paper_attention, paper_linear
    rows.append(("attention speedup, FuseMax over FLAT (mean)",) + both(
        lambda k: o[("flat", *k)].attention.latency_s / o[("fusemax", *k)].attention.latency_s,
        lambda k: pa[("flat", *k)].latency_s / pa[("fusemax", *k)].latency_s))
    rows.append(("attention energy, FuseMax / FLAT (mean)",) + both(
        lambda k: o[("fusemax", *k)].attention.energy_j / o[("flat", *k)].attention.energy_j,
        lambda k: pa[("fusemax", *k)].energy_j / pa[("flat", *k)].energy_j))
    if pl is not None or paper_attention is None:
        rows.append(("end-to-end layer speedup, FuseMax over FLAT (mean)",) + both(
            lambda k: o[("flat", *k)].layer_latency_s / o[("fusemax", *k)].layer_latency_s,
            lambda k: (pa[("flat", *k)].latency_s + pl[("flat", *k)].latency_s)
            / (pa[("fusemax", *k)].latency_s + pl[("fusemax", *k)].latency_s)))
        rows.append(("end-to-end layer energy, FuseMax / FLAT (mean)",) + both(
            lambda k: o[("fusemax", *k)].layer_energy_j / o[("flat", *k)].layer_energy_j,
            lambda k: (pa[("fusemax", *k)].energy_j + pl[("fusemax", *k)].energy_j)
            / (pa[("flat", *k)].energy_j + pl[("flat", *k)].energy_j)))
    present = [d for d in DESIGN_SPECS if (d, *keys[0]) in o]
    for design in present:
        if "unfused" not in present:
            break
        rows.append((f"{LABELS[design]}: attention speedup over Unfused (mean)",) + both(
            lambda k, d=design: o[("unfused", *k)].attention.latency_s / o[(d, *k)].attention.latency_s,
            lambda k, d=design: pa[("unfused", *k)].latency_s / pa[(d, *k)].latency_s))
    for design in present:
        for unit, label in (("pe_2d", "2D"), ("pe_1d", "1D")):
            rows.append((f"{LABELS[design]}: {label} array utilisation (mean)",) + both(
                lambda k, d=design, u=unit: o[(d, *k)].attention.utilization[u],
                lambda k, d=design, u=unit: getattr(pa[(d, *k)], "util_2d" if u == "pe_2d" else "util_1d")))
    return rows


FIGURE12_DIMS = (16, 32, 64, 128, 256, 512)
FIGURE12_SEQ_LEN = 262144


def scaled_fusemax(pe_dim: int, buffer_bytes: float):
    """fusemax-cloud with a pe_dim x pe_dim 2D array, a pe_dim-PE 1D array and the given global
    buffer (Figure 12's design points; everything else, energies included, unchanged)."""
    from einsim.simulator.simulate import resolve_target

    base = resolve_target("fusemax-cloud")
    units = dict(base.compute_units)
    units["pe_2d"] = dataclasses.replace(units["pe_2d"], shape=(pe_dim, pe_dim), count=pe_dim * pe_dim)
    units["pe_1d"] = dataclasses.replace(units["pe_1d"], shape=(pe_dim,), count=pe_dim)
    resized = {"pe_registers": {"instances": pe_dim * pe_dim}, "registers_1d": {"instances": pe_dim},
               "global_buffer": {"capacity_bytes": buffer_bytes}}
    levels = tuple(dataclasses.replace(level, **resized.get(level.name, {})) for level in base.memory_levels)
    return dataclasses.replace(base, name=f"fusemax-{pe_dim}x{pe_dim}-{buffer_bytes:.0f}B", compute_units=units,
                               memory_levels=levels)


def figure12(buffering: str = "single", models=MODELS) -> dict[tuple[str, int], tuple[Estimate, float]]:
    """FuseMax at 256K tokens on each array size at the smallest buffer the artifact gives it
    (`src/run.py pareto`): start from one tile's worth (paper_reference.pareto_buffer_bytes) and
    double it while the DRAM time exceeds the 1D array's busy time; the multiplier carries over
    to the next (larger) array, and arrays stop once the buffer passes 32 MiB. Returns each
    point's estimate and buffer."""
    out = {}
    for model_name in models:
        problem = load_model(model_name).problem(FIGURE12_SEQ_LEN)
        multiplier = 1
        for pe_dim in FIGURE12_DIMS:
            while True:
                buffer = pareto_buffer_bytes(pe_dim, multiplier, problem.head_dim)
                target = scaled_fusemax(pe_dim, buffer)
                estimate = simulate("fusemax", problem, target, Mapping(buffering=buffering))
                dram_s = estimate.traffic_bytes / target.offchip.bandwidth()
                if dram_s > estimate.utilization["pe_1d"] * estimate.latency_s * (1 + 1e-9):
                    multiplier *= 2
                    continue
                break
            out[(model_name, pe_dim)] = (estimate, buffer)
            if buffer > 32 * 2**20:
                break
    return out


# The FLAT paper's headline (Kao et al., ASPLOS 2023, abstract): FLAT over the same accelerator
# without a fused attention dataflow, averaged over its models and inputs up to 64K elements.
FLAT_HEADLINE = {"cloud": (1.76, 0.42), "edge": (1.94, 0.49)}  # speedup, energy saving
FLAT_SEQ_LENS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def wide_softmax(target):
    """A what-if of `target` whose 1D array (and exp units) is as wide as its 2D array: the
    softmax no longer bounds anything, as in the FLAT paper's own model of its accelerators."""
    from einsim.simulator.simulate import resolve_target

    target = resolve_target(target)
    units = dict(target.compute_units)
    pes = units["pe_2d"].count
    units["pe_1d"] = dataclasses.replace(units["pe_1d"], shape=(pes,), count=pes)
    if units["exp"].via is None and units["exp"].shape:
        units["exp"] = dataclasses.replace(units["exp"], shape=(pes,), count=1)
    levels = tuple(dataclasses.replace(level, instances=pes) if level.name == "registers_1d" else level
                   for level in target.memory_levels)
    return dataclasses.replace(target, name=f"{target.name}-wide-1d", compute_units=units, memory_levels=levels)


def flat_headline(platform: str, what_if: bool = False, models=MODELS, seq_lens=FLAT_SEQ_LENS) -> dict[str, float]:
    """FLAT (its default policy) over the unfused baseline on `platform`: mean, least and largest
    speedup and the mean energy saving over the models and lengths."""
    flat, unfused = f"flat-{platform}", f"unfused-{platform}"
    if what_if:
        flat, unfused = wide_softmax(flat), wide_softmax(unfused)
    speedups, savings = [], []
    for model_name in models:
        for seq_len in seq_lens:
            problem = load_model(model_name).problem(seq_len)
            f = simulate("attention-3pass", problem, flat)
            u = simulate("attention-3pass", problem, unfused)
            speedups.append(u.latency_s / f.latency_s)
            savings.append(1.0 - f.energy_j / u.energy_j)
    return {"speedup": statistics.fmean(speedups), "least": min(speedups), "largest": max(speedups),
            "saving": statistics.fmean(savings)}


def flat_operator_errors(platform: str = "cloud") -> dict[tuple[str, int], float]:
    """einsim's QK + AV DRAM bytes at each of the artifact's FLAT configurations on `platform`
    (every length it lists, 512 to 1M) over the artifact's (`mem_traffic`), minus one."""
    out = {}
    for (model, seq_len), row in flat_points(platform).items():
        problem = load_model(model).problem(seq_len)
        estimate = simulate("attention-3pass", problem, f"flat-{platform}", load_mapping(flat_mapping(model, seq_len, platform)))
        per_einsum = {e.einsum: e.traffic_bytes for e in estimate.per_einsum}
        out[(model, seq_len)] = (per_einsum["QK"] + per_einsum["AV"]) / row["mem_traffic"] - 1
    return out
