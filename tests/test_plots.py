"""The other figures' data: the cascade graph coloured exactly as analyze_passes says, speedup and
energy relative to the baseline design as the simulator estimates them, traffic steps against
buffer capacity; each renders headless (Agg) and every plot command writes its data as CSV/JSON."""

from __future__ import annotations

import csv
import json
import math

import pytest

from einsim.cli import main
from einsim.einsum_cascades import library_names, load_cascade
from einsim.einsum_cascades.passes import analyze_passes
from einsim.errors import ConfigError
from einsim.problem import Problem
from einsim.plots.pass_graph_data import INPUT_COLOR, pass_color, pass_graph
from einsim.plots.speedup_data import Design, PAPER_DESIGNS, parse_design, speedup_data
from einsim.plots.traffic_data import TrafficPoint, TrafficSteps, traffic_steps
from einsim.plots.passes_graph import plot_pass_graph
from einsim.plots.speedup import length_text, plot_speedup
from einsim.plots.traffic_buffer import plot_traffic_vs_buffer
from einsim.simulator.simulate import simulate


ATTENTION = [name for name in library_names() if "M" in load_cascade(name).ranks]


@pytest.mark.parametrize("name", ATTENTION)
def test_pass_graph_colours_every_einsum_by_its_pass(name):
    cascade = load_cascade(name)
    report = analyze_passes(cascade)
    graph = pass_graph(cascade)
    assert graph.passes == report.passes
    for einsum in cascade.einsums:
        node = graph.node(einsum.output)
        assert node.pass_index == report.einsum_pass[einsum.output]
        assert node.color == pass_color(report.einsum_pass[einsum.output])
    for tensor in cascade.inputs:
        assert graph.node(tensor).color == INPUT_COLOR and graph.node(tensor).kind == "input"
    reads = {(t, e.output) for e in cascade.einsums for t in e.operand_tensors}
    assert {(edge.source, edge.target) for edge in graph.edges} == reads
    for edge in graph.edges:  # laid out left to right: every dependency points forward
        if not edge.carried:
            assert graph.node(edge.source).x < graph.node(edge.target).x


def test_passes_have_distinct_colours():
    assert len({pass_color(k) for k in range(1, 9)}) == 8
    assert pass_color(0) == INPUT_COLOR


def test_three_pass_graph_renders_a_legend_entry_per_pass():
    figure = plot_pass_graph(pass_graph("attention-3pass"))
    labels = [t.get_text() for t in figure.legends[0].get_texts()]  # one legend under the graph
    assert labels[:4] == ["input", "pass 1", "pass 2", "pass 3"]


def test_speedup_is_baseline_latency_over_latency():
    data = speedup_data(["BERT"], [1024], PAPER_DESIGNS, batch=1)
    problem = Problem(batch=1, q_heads=12, q_len=1024, kv_len=1024, head_dim=64)
    estimates = {d.label: simulate(d.cascade, problem, d.target) for d in PAPER_DESIGNS}
    base = estimates["Unfused"]
    for design in PAPER_DESIGNS:
        r = data.row("BERT", 1024, design.label)
        assert r.latency_s == pytest.approx(estimates[design.label].latency_s)
        assert r.speedup == pytest.approx(base.latency_s / estimates[design.label].latency_s)
        assert r.energy_ratio == pytest.approx(estimates[design.label].energy_j / base.energy_j)
    assert data.row("BERT", 1024, "Unfused").speedup == 1.0
    assert data.geomean("FuseMax") == pytest.approx(data.row("BERT", 1024, "FuseMax").speedup)
    figure = plot_speedup(data)
    top, bottom = figure.get_axes()[:2]
    heights = sorted(round(p.get_height(), 9) for p in top.patches)
    assert round(data.row("BERT", 1024, "FuseMax").speedup, 9) in heights
    assert "Energy" in bottom.get_ylabel()


def test_designs_parse_and_the_baseline_must_be_one_of_them():
    assert parse_design("FuseMax=fusemax-cloud:fusemax") == Design("FuseMax", "fusemax-cloud", "fusemax")
    assert parse_design("flat-edge:attention-3pass").label == "flat-edge"
    with pytest.raises(ConfigError):
        parse_design("fusemax-cloud")
    with pytest.raises(ConfigError):
        speedup_data(["BERT"], [1024], PAPER_DESIGNS, baseline="TPU")
    assert [length_text(n) for n in (512, 4096, 1 << 20)] == ["512", "4K", "1M"]


def test_traffic_plot_draws_a_step_curve_per_cascade():
    w = Problem(batch=1, q_heads=1, q_len=64, kv_len=64, head_dim=64, name="tiny")
    compulsory = 4 * 64 * 64 * 2
    points = tuple(TrafficPoint("3pass", c, t, t / compulsory, 3, True, 0.0, 1e-3, 1e-3)
                   for c, t in ((1024, 3 * compulsory), (4096, 3 * compulsory), (16384, compulsory)))
    points += tuple(TrafficPoint("1pass", c, compulsory, 1.0, 1, True, 0.0, 1e-3, 1e-3) for c in (1024, 4096, 16384))
    data = TrafficSteps(target="fusemax-cloud", level="global_buffer", problem=w, compulsory_bytes=compulsory,
                        points=points, steps={"3pass": ((16384, 3 * compulsory, compulsory),), "1pass": ()})
    axis = plot_traffic_vs_buffer(data).get_axes()[0]
    assert axis.get_xscale() == "log" and "Off-chip traffic" in axis.get_ylabel()
    curves = {line.get_label(): line for line in axis.get_lines()}
    gib = 2.0**30  # sizes and traffic in binary units, as the CLI prints them
    assert list(curves["3pass (3 passes)"].get_ydata()) == [3 * compulsory / gib] * 2 + [compulsory / gib]
    assert [t.get_text() for t in axis.texts] == ["3x → 1x\nat 16 KiB"]


# --- the commands --------------------------------------------------------------------------------

def test_roofline_command_writes_figure_and_csv(tmp_path, capsys):
    figure, table = tmp_path / "roofline.svg", tmp_path / "roofline.csv"
    assert main(["roofline", "--target", "h100-sxm", "--cascade", "fusemax", "--cascade", "attention-3pass",
                 "--shape", "1,2,256,64", "-o", str(figure), "--csv", str(table)]) == 0
    assert figure.read_text().lstrip().startswith("<?xml")
    rows = list(csv.DictReader(open(table)))
    assert {r["record"] for r in rows} == {"roof", "point"}
    assert {r["name"] for r in rows if r["record"] == "point"} == {"fusemax", "attention-3pass"}


def test_roofline_command_prints_json_and_a_table(capsys):
    assert main(["roofline", "--target", "fusemax-cloud", "--shape", "1,2,256,64", "--json"]) == 0
    [panel] = json.loads(capsys.readouterr().out)
    assert panel["target"] == "fusemax-cloud" and panel["points"][0]["name"] == "fusemax"
    assert main(["roofline", "--target", "fusemax-cloud", "--shape", "1,2,256,64"]) == 0
    assert "matmul" in capsys.readouterr().out


def test_roofline_command_refuses_an_unknown_figure_format(tmp_path, capsys):
    assert main(["roofline", "--target", "h100-sxm", "--shape", "1,2,256,64", "-o", str(tmp_path / "x.gif")]) == 2
    assert "expected a file name ending in" in capsys.readouterr().err


def test_plot_passes_and_speedup_commands(tmp_path, capsys):
    assert main(["plot", "passes", "attention-3pass", "-o", str(tmp_path / "g.png"), "--json"]) == 0
    graph = json.loads(capsys.readouterr().out)
    assert graph["passes"] == 3 and (tmp_path / "g.png").stat().st_size > 1000
    assert main(["plot", "speedup", "--model", "BERT", "--seq-lens", "1k", "--batch", "1", "--csv", "-"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["design"] for r in rows] == ["Unfused", "FLAT", "FuseMax"]
    assert float(rows[0]["speedup"]) == 1.0


def test_traffic_steps_are_the_simulators_buffer_sweep():
    from einsim.simulator.sweep import buffer_sweep

    w = Problem(batch=1, q_heads=2, q_len=2048, kv_len=2048, head_dim=64, name="small")
    capacities = [2.0**k for k in range(12, 25)]
    resident = {"staging": "resident"}  # live rows kept or spilled: the curve steps with the passes
    data = traffic_steps(["attention-3pass", "fusemax"], w, "flat-cloud", capacities, resident)
    assert data.level == "global_buffer"
    for name in ("attention-3pass", "fusemax"):
        rows = [r for r in buffer_sweep(name, w, "flat-cloud", resident, capacities=capacities) if math.isfinite(r["traffic_bytes"])]
        curve = data.curve(name)
        assert [(p.buffer_capacity_bytes, p.traffic_bytes) for p in curve] == [(r["buffer_bytes"], r["traffic_bytes"]) for r in rows]
    assert any("no mapping fits" in note for note in data.notes)  # the smallest buffers hold no tile
    three = data.curve("attention-3pass")
    assert three[0].passes == 3 and data.steps["attention-3pass"]  # spills at small buffers, steps down
    assert three[-1].traffic_ratio == pytest.approx(1.0)
    assert data.compulsory_bytes == pytest.approx(4 * 2 * 2048 * 64 * 2)
    assert data.curve("fusemax")[-1].traffic_ratio == pytest.approx(1.0)


def test_a_cascade_without_the_rank_is_drawn_without_passes(tmp_path, capsys):
    graph = pass_graph("ffn")
    assert graph.passes == 0 and graph.rank == ""
    assert {n.pass_index for n in graph.nodes} == {0} and {n.color for n in graph.nodes if n.kind == "einsum"} == {pass_color(1)}
    assert main(["plot", "passes", "ffn", "-o", str(tmp_path / "ffn.svg")]) == 0
    # `einsim cascades graph` draws the same figure
    assert main(["cascades", "graph", "attention-3pass", "-o", str(tmp_path / "g.svg")]) == 0
    assert main(["plot", "passes", "attention-3pass", "-o", str(tmp_path / "p.svg")]) == 0
    assert (tmp_path / "g.svg").read_text() == (tmp_path / "p.svg").read_text()


def test_traffic_command_refuses_an_empty_buffer_range(capsys):
    assert main(["plot", "traffic-vs-buffer", "--target", "flat-cloud", "--shape", "1,2,1k,64",
                 "--min-buffer", "8 MiB", "--max-buffer", "1 MiB"]) == 2
    assert "--max-buffer must be at least --min-buffer" in capsys.readouterr().err
