"""The numbers behind the speedup and energy figure: designs (cascade on target) across models
and sequence lengths, relative to a baseline design (the FuseMax paper's Figure 8 by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from einsim.errors import ConfigError, brief
from einsim.simulator.simulate import resolve_cascade, resolve_target


@dataclass(frozen=True)
class Design:
    """A design of the comparison: a target running a cascade (the FuseMax paper's baselines)."""

    label: str
    target: str
    cascade: str


PAPER_DESIGNS = (
    Design("Unfused", "unfused-cloud", "attention-3pass"),
    Design("FLAT", "flat-cloud", "attention-3pass"),
    Design("FuseMax", "fusemax-cloud", "fusemax"),
)


@dataclass(frozen=True)
class SpeedupRow:
    model: str
    seq_len: int
    design: str
    target: str
    cascade: str
    latency_s: float
    energy_j: float
    speedup: float  # baseline latency / latency
    energy_ratio: float  # energy / baseline energy
    bound: str


@dataclass(frozen=True)
class SpeedupData:
    baseline: str
    designs: tuple[Design, ...]
    rows: tuple[SpeedupRow, ...]
    mode: str = "prefill"

    def groups(self) -> list[tuple[str, int]]:
        return list(dict.fromkeys((r.model, r.seq_len) for r in self.rows))

    def geomean(self, design: str, field_name: str = "speedup") -> float:
        values = [getattr(r, field_name) for r in self.rows if r.design == design]
        return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan

    def row(self, model: str, seq_len: int, design: str) -> SpeedupRow:
        for r in self.rows:
            if (r.model, r.seq_len, r.design) == (model, seq_len, design):
                return r
        raise KeyError((model, seq_len, design))


def parse_design(text: str) -> Design:
    """'LABEL=TARGET:CASCADE' (or 'TARGET:CASCADE', labelled by the target)."""
    label, _, rest = text.rpartition("=")
    target, sep, cascade = rest.partition(":")
    if not sep or not target or not cascade:
        raise ConfigError(f"--design expects LABEL=TARGET:CASCADE (e.g. FuseMax=fusemax-cloud:fusemax), got {brief(text)}")
    return Design(label or target, target, cascade)


def speedup_data(models: Sequence[str], seq_lens: Sequence[int], designs: Sequence[Design] = PAPER_DESIGNS,
                 baseline: str | None = None, mode: str = "prefill", batch: int | None = None) -> SpeedupData:
    """Latency and energy of every design for each model and sequence length, relative to the
    baseline design (default: the first)."""
    from einsim.simulator.models import load_model
    from einsim.simulator.simulate import simulate

    if not designs:
        raise ConfigError("speedup needs at least one design")
    baseline = baseline or designs[0].label
    labels = [d.label for d in designs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:  # estimates are keyed by label: a repeat reported one design's latency as another's
        raise ConfigError(f"--design labels must differ; {', '.join(map(repr, repeated))} is given more than once "
                          f"(name them LABEL=TARGET:CASCADE)")
    if baseline not in labels:
        raise ConfigError(f"baseline {baseline!r} is not one of the designs ({', '.join(labels)})")
    targets = {d.target: resolve_target(d.target) for d in designs}
    cascades = {d.cascade: resolve_cascade(d.cascade) for d in designs}
    rows = []
    for model_name in models:
        model = load_model(model_name)
        for seq_len in seq_lens:
            problem = model.problem(int(seq_len), mode, batch)
            estimates = {d.label: simulate(cascades[d.cascade], problem, targets[d.target]) for d in designs}
            base = estimates[baseline]
            for d in designs:
                e = estimates[d.label]
                rows.append(SpeedupRow(
                    model=model.name, seq_len=int(seq_len), design=d.label, target=d.target, cascade=d.cascade,
                    latency_s=e.latency_s, energy_j=e.energy_j, speedup=base.latency_s / e.latency_s,
                    energy_ratio=e.energy_j / base.energy_j if base.energy_j else math.nan, bound=e.bound))
    return SpeedupData(baseline=baseline, designs=tuple(designs), rows=tuple(rows), mode=mode)
