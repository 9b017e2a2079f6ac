"""The roofline's data: roofs are the target's peaks, ridge points are peak / bandwidth, points sit
at the estimate's ops / bytes and never above a roof; measured runs from a benchmark CSV and a
tuning database; figures render headless (Agg) to PNG, SVG and PDF."""

from __future__ import annotations

import csv
import math

import pytest

from einsim.errors import ConfigError
from einsim.problem import Problem
from einsim.simulator import EinsumEstimate, Estimate
from einsim.plots.roofline_data import OperationMix, cascade_roofs, operation_mix, roofline_data, roofline_for
from einsim.plots.roofs import attention_flops, merge_roofs, target_roofs
from einsim.plots.figure import save_figure
from einsim.units import format_rate
from einsim.autotune.naming import problem_from_tag
from einsim.plots.measured import load_benchmark_csv, load_tuning_db
from einsim.plots.roofline import plot_roofline
from einsim.targets import load_target

SMALL = Problem(batch=1, q_heads=2, q_len=256, kv_len=256, head_dim=64, name="small")


def estimate(target: str, rows: tuple[EinsumEstimate, ...] = (), traffic: float = 1e6, latency: float = 1e-3,
             bound: str = "hbm", cascade: str = "toy") -> Estimate:
    return Estimate(
        cascade=cascade, target=target, problem=SMALL, passes=1, buffer_bytes=0.0, buffer_capacity_bytes=1.0,
        fits=True, traffic_bytes=traffic, traffic_by_level={}, compute_ops={}, latency_s=latency, bound=bound,
        utilization={}, energy_j=0.0, energy_by_component={}, per_einsum=rows)


def row(einsum: str, unit: str, ops: dict[str, float], traffic: float = 0.0, latency: float = 1e-4) -> EinsumEstimate:
    return EinsumEstimate(einsum=einsum, pass_index=1, unit=unit, compute_ops=ops, traffic_bytes=traffic,
                          buffer_bytes=0.0, latency_s=latency, energy_j=0.0)


@pytest.mark.parametrize("name", ["h100-sxm", "a100-80gb", "fusemax-cloud", "flat-edge"])
@pytest.mark.parametrize("source", ["measured", "datasheet"])
def test_matmul_roof_is_the_targets_peak_and_ridge_is_peak_over_bandwidth(name, source):
    target = load_target(name)
    roofs = {(r.role, r.level): r for r in target_roofs(target, "bf16", source)}
    macs, used = target.peak_ops_per_s(target.unit("matrix"), "bf16", source)
    matmul = roofs["matmul", ""]
    assert matmul.peak == macs and matmul.flops_per_s == 2 * macs and matmul.source == used
    for level, memory in ((target.offchip, roofs["memory", "off-chip"]), (target.memory_levels[-2], roofs["memory", "on-chip"])):
        assert memory.resource == level.name
        assert memory.peak == level.bandwidth(source)
        assert memory.ridge_intensity == pytest.approx(2 * macs / level.bandwidth(source), rel=1e-12)
        assert memory.attainable(memory.ridge_intensity) == pytest.approx(matmul.flops_per_s, rel=1e-12)


def test_h100_matmul_roof_uses_the_measured_ceiling_unless_datasheet_is_asked():
    target = load_target("h100-sxm")
    measured = target_roofs(target, "bf16", "measured")[0]
    datasheet = target_roofs(target, "bf16", "datasheet")[0]
    assert measured.source == "measured" and datasheet.source == "datasheet"
    assert datasheet.flops_per_s == pytest.approx(989.4e12)


def test_point_intensity_is_attention_flops_over_the_estimates_offchip_bytes():
    data = roofline_data("h100-sxm", [estimate("h100-sxm", traffic=3e6, latency=2e-5)])
    point = data.point("toy")
    work = attention_flops(SMALL)
    assert work == 1 * 2 * 256 * 256 * 2 * (64 + 64)
    assert point.flops == work
    assert point.intensity == pytest.approx(work / 3e6)
    assert point.flops_per_s == pytest.approx(work / 2e-5)
    assert point.bound_role == "memory"


def test_causal_work_counts_visible_pairs_only():
    causal = Problem(batch=1, q_heads=1, q_len=4, kv_len=4, head_dim=8, causal=True)
    assert attention_flops(causal) == 10 * 2 * (8 + 8)


def test_operation_mix_follows_the_binding():
    gpu = load_target("h100-sxm")
    mix = operation_mix(estimate("h100-sxm", (
        row("QK", "tensor_core", {"mac": 100.0, "convert": 7.0}),
        row("SN", "sfu", {"sub": 10.0, "exp": 10.0}),
        row("GM", "cuda_core", {"max": 10.0}),
    )), gpu)
    assert (mix.macs, mix.exps, mix.vector_ops, mix.array_ops) == (100.0, 10.0, 27.0, 0.0)
    spatial = load_target("fusemax-cloud")
    mix = operation_mix(estimate("fusemax-cloud", (
        row("QK", "pe_2d", {"mul": 100.0, "add": 100.0}),
        row("LM", "pe_2d", {"max": 10.0}),
        row("SLN", "pe_2d", {"sub": 10.0, "exp": 10.0}),
        row("RM", "pe_1d", {"max": 2.0}),
    )), spatial)
    assert (mix.macs, mix.exps, mix.vector_ops, mix.array_ops) == (100.0, 10.0, 2.0, 20.0)
    assert mix.per_einsum["SLN"] == OperationMix(exps=10.0, array_ops=10.0)


def test_exp_and_vector_roofs_convert_their_operations_into_attention_flops():
    target = load_target("h100-sxm")
    mix = OperationMix(macs=1e6, exps=1e4, vector_ops=5e4)
    roofs = {r.role: r for r in cascade_roofs(target, "bf16", mix, 2e6, "toy")}
    exps, _ = target.peak_ops_per_s(target.unit("exp"), "bf16")
    lanes, _ = target.peak_ops_per_s(target.unit("vector"), "bf16")
    assert roofs["exp"].peak == exps and roofs["exp"].peak_unit == "exp/s"
    assert roofs["exp"].flop_per_op == 200.0 and roofs["exp"].flops_per_s == pytest.approx(exps * 200.0)
    assert roofs["vector"].peak == lanes and roofs["vector"].flops_per_s == pytest.approx(lanes * 40.0)
    assert roofs["exp"].cascades == ("toy",)
    # FuseMax computes exps on the 2D array: 6 MACs each
    fusemax = load_target("fusemax-cloud")
    [exp] = [r for r in cascade_roofs(fusemax, "bf16", mix, 2e6, "toy") if r.role == "exp"]
    macs, _ = fusemax.peak_ops_per_s(fusemax.unit("matrix"), "bf16")
    assert exp.peak == pytest.approx(macs / 6)
    assert [r.role for r in cascade_roofs(fusemax, "bf16", mix, 2e6, "toy")] == ["exp", "1D array"]


def test_roofs_of_cascades_with_the_same_mix_are_drawn_once():
    target = load_target("h100-sxm")
    a = cascade_roofs(target, "bf16", OperationMix(exps=100.0), 1e4, "a")
    b = cascade_roofs(target, "bf16", OperationMix(exps=100.5), 1e4, "b")
    c = cascade_roofs(target, "bf16", OperationMix(exps=300.0), 1e4, "c")
    merged = merge_roofs(a + b + c)
    assert [r.cascades for r in merged] == [("a", "b"), ("c",)]


@pytest.mark.parametrize("target", ["h100-sxm", "fusemax-cloud", "flat-cloud"])
def test_predicted_points_never_rise_above_a_roof(target):
    [data] = roofline_for([target], ["fusemax", "attention-3pass"], SMALL, per_einsum=True)
    assert {p.name for p in data.points if p.einsum is None} == {"fusemax", "attention-3pass"}
    for point in data.points:
        if point.einsum is None:
            assert point.flops_per_s <= point.attainable_flops_per_s * (1 + 1e-9), point
            estimate_ = data.point(point.name)
            assert point.intensity == pytest.approx(attention_flops(SMALL) / estimate_.traffic_bytes)


def test_estimates_of_another_workload_or_target_are_refused():
    other = Problem(batch=1, q_heads=2, q_len=512, kv_len=512, head_dim=64, name="other")
    e = estimate("h100-sxm")
    with pytest.raises(ConfigError):
        roofline_data("h100-sxm", [e, Estimate(**{**e.__dict__, "problem": other})])
    with pytest.raises(ConfigError):
        roofline_data("a100-80gb", [e])


def write_bench(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["kind", "backend", "N", "D", "causal", "ms", "tflops", "tbps"])
        writer.writeheader()
        writer.writerows(rows)


def test_measured_runs_sit_at_their_compulsory_intensity(tmp_path):
    path = tmp_path / "bench.csv"
    write_bench(path, [
        {"kind": "ceiling", "backend": "mm_bf16", "N": 0, "D": 0, "causal": 0, "ms": 0, "tflops": 709, "tbps": 0},
        {"kind": "prefill", "backend": "flash", "N": 256, "D": 64, "causal": 0, "ms": 0.5, "tflops": 300, "tbps": 0},
        {"kind": "prefill", "backend": "flash", "N": 256, "D": 64, "causal": 1, "ms": 0.5, "tflops": 200, "tbps": 0},
        {"kind": "prefill", "backend": "flash", "N": 512, "D": 64, "causal": 0, "ms": 0.9, "tflops": 310, "tbps": 0},
        {"kind": "decode", "backend": "flash", "N": 256, "D": 64, "causal": 0, "ms": 0.1, "tflops": 0, "tbps": 2.5},
    ])
    runs = load_benchmark_csv(path)
    assert [r.kind for r in runs] == ["prefill", "prefill", "prefill", "decode"]
    full = runs[0].problem
    assert runs[0].intensity == pytest.approx(full.forward_flops() / full.forward_min_bytes())
    decode = runs[3]
    assert decode.problem.q_len == 1
    assert decode.flops_per_s == pytest.approx(decode.intensity * 2.5e12)

    data = roofline_data("h100-sxm", [estimate("h100-sxm")], measured=runs)
    [point] = [p for p in data.points if p.origin == "measured"]
    assert (point.name, point.flops_per_s, point.intensity) == ("flash", 300e12, runs[0].intensity)
    assert any("3 measured run" in note for note in data.notes)
    lengths = roofline_data("h100-sxm", [estimate("h100-sxm")], measured=runs, measured_match="lengths")
    assert len([p for p in lengths.points if p.origin == "measured"]) == 2
    # benchmark files without a target column are GPU runs: not on an accelerator's roofline
    spatial = roofline_data("fusemax-cloud", [estimate("fusemax-cloud")], measured=runs)
    assert not [p for p in spatial.points if p.origin == "measured"]


def test_a_compiled_variants_runs_sit_only_beside_their_cascade(tmp_path):
    """bench_variants' roofline CSV names each row's cascade: a user's variant is drawn with its
    own measured runs (and plain-attention rows, which name none), not with other variants'."""
    path = tmp_path / "variants.csv"
    p = SMALL
    base = {"kind": "prefill", "N": p.kv_len, "D": p.head_dim, "causal": int(p.causal), "ms": 0.5,
            "tflops": 300, "tbps": 0}
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(base) + ["backend", "cascade"])
        writer.writeheader()
        writer.writerow(dict(base, backend="alibi einsim-compiled", cascade="alibi"))
        writer.writerow(dict(base, backend="softcap einsim-compiled", cascade="softcap"))
        writer.writerow(dict(base, backend="cudnn", cascade=""))
    runs = load_benchmark_csv(path)
    assert [r.cascade for r in runs] == ["alibi", "softcap", None]
    data = roofline_data("h100-sxm", [estimate("h100-sxm", cascade="alibi")], measured=runs)
    assert sorted(p.name for p in data.points if p.origin == "measured") == ["alibi einsim-compiled", "cudnn"]
    assert any("the cascade when the run names one" in note for note in data.notes)


def test_a_benchmark_csv_without_the_columns_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("backend,ms\nflash,1\n")
    with pytest.raises(ConfigError, match="missing"):
        load_benchmark_csv(path)
    with pytest.raises(ConfigError):
        load_benchmark_csv(tmp_path / "absent.csv")


def test_problem_tags_of_the_autotuner_parse_back():
    from einsim.autotune.naming import problem_tag
    from einsim.problem import Problem

    for problem in (Problem(batch=4, q_heads=16, kv_heads=16, q_len=4096, kv_len=4096, head_dim=128, causal=True),
                    Problem(batch=2, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128, window=(256, 0), v_head_dim=64)):
        assert problem_from_tag(problem_tag(problem)) == problem


def test_tuning_database_gives_the_best_measured_trial(tmp_path):
    import optuna

    from einsim.autotune.naming import problem_tag
    from einsim.problem import Problem
    from einsim.kernels.registry import get_kernel

    problem = Problem(batch=1, q_heads=2, kv_heads=2, q_len=256, kv_len=256, head_dim=64)
    url = f"sqlite:///{tmp_path / 'tuning.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, objective in (("real", "gpu"), ("dry", "simulator")):
        study = optuna.create_study(storage=url, study_name=name)
        for key, value in {"kernel": "attention-fwd", "problem": problem_tag(problem), "target": "h100-sxm",
                           "objective": objective}.items():
            study.set_user_attr(key, value)
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=2e-5))
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1e-5))
    [run] = load_tuning_db(url)
    flops = get_kernel("attention-fwd").flops(problem)
    assert run.time_s == 1e-5 and run.flops_per_s == pytest.approx(flops / 1e-5) and run.target == "h100-sxm"
    data = roofline_data("h100-sxm", [estimate("h100-sxm")], measured=[run])
    assert [p.origin for p in data.points] == ["predicted", "tuned"]
    assert not [p for p in roofline_data("a100-80gb", [estimate("a100-80gb")], measured=[run]).points if p.origin == "tuned"]


def test_rooflines_render_headless_one_panel_per_target(tmp_path):
    panels = roofline_for(["h100-sxm", "fusemax-cloud"], ["fusemax"], SMALL, per_einsum=True)
    figure = plot_roofline(panels)
    axes = figure.get_axes()
    assert len(axes) == 2
    for axis, panel in zip(axes, panels):
        assert axis.get_xscale() == "log" and axis.get_yscale() == "log"
        assert "FLOP per off-chip byte" in axis.get_xlabel()
        assert "TFLOP/s" in axis.get_ylabel() or axis is not axes[0]  # shared y: labelled once, at the left
        # Every roof is labelled on its line with its peak (decimal prefixes for rates).
        labels = [t.get_text() for t in axis.texts]
        for roof in panel.roofs:
            peak = roof.peak if roof.kind == "memory" else roof.flops_per_s
            assert any(label.endswith(format_rate(peak, "B/s" if roof.kind == "memory" else "FLOP/s"))
                       for label in labels), roof.label
        matmul = panel.roof("matmul")
        assert any(math.isclose(line.get_ydata()[0], matmul.flops_per_s / 1e12) for line in axis.get_lines())
    legend = [t.get_text() for t in figure.legends[0].get_texts()]  # one legend for both panels
    assert legend == ["fusemax, simulated"]
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])  # panels that compare share axes
    for suffix in ("png", "svg", "pdf"):
        path = save_figure(figure, tmp_path / f"roofline.{suffix}")
        assert path.stat().st_size > 1000
    with pytest.raises(ConfigError, match="expected a file name ending in .png, .svg, .pdf"):
        save_figure(figure, tmp_path / "roofline.jpg")


def test_a_missing_tuning_database_is_an_error_not_a_new_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_tuning_db(str(tmp_path / "typo.db"))
    assert not (tmp_path / "typo.db").exists()
