"""Plots a user would put in a paper: rooflines, traffic against buffer capacity, speedup and energy
bars, the cascade graph coloured by pass; each a matplotlib Figure (Agg, no display) with its data.

The data functions (`roofline_data`, `traffic_data`, `speedup_data`, `pass_graph_data`, with the
roofs and points they share in `roofs`) are the tested core; `plot_*` only draw them.
Conventions: docs/plots.md.
"""

from einsim.plots.pass_graph_data import PassGraph, pass_graph
from einsim.plots.roofline_data import RooflineData, roofline_data, roofline_for
from einsim.plots.roofs import Roof, RooflinePoint
from einsim.plots.speedup_data import Design, PAPER_DESIGNS, SpeedupData, speedup_data
from einsim.plots.traffic_data import TrafficSteps, traffic_steps
from einsim.plots.figure import save_figure
from einsim.plots.measured import MeasuredRun, load_benchmark_csv, load_measured, load_tuning_db
from einsim.plots.passes_graph import plot_pass_graph
from einsim.plots.roofline import plot_roofline
from einsim.plots.speedup import plot_speedup
from einsim.plots.traffic_buffer import plot_traffic_vs_buffer

__all__ = [
    "PAPER_DESIGNS", "Design", "MeasuredRun", "PassGraph", "Roof", "RooflineData", "RooflinePoint",
    "SpeedupData", "TrafficSteps", "load_benchmark_csv", "load_measured", "load_tuning_db", "pass_graph",
    "plot_pass_graph", "plot_roofline", "plot_speedup", "plot_traffic_vs_buffer", "roofline_data",
    "roofline_for", "save_figure", "speedup_data", "traffic_steps",
]
