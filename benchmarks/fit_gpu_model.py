"""Fit the one GPU cost model's constants to the measured times in benchmarks/data and write them
to simulator/gpu_cost/fitted.yaml (the only place they live), with the data files' hashes, the
command and the errors; held-out rows (N = 2048 or 8192) never enter the fit.

    PYTHONPATH=. python benchmarks/fit_gpu_model.py            # refit, write fitted.yaml, print errors
    PYTHONPATH=. python benchmarks/fit_gpu_model.py --check    # errors of the committed constants only
    PYTHONPATH=. python benchmarks/fit_gpu_model.py --pins     # rewrite the test's pinned tables only

The fit: scipy.optimize.least_squares (trust-region reflective, bounds) on log(predicted /
measured) of every fitted row, each group of rows (file x style x kind) weighted 1/sqrt(rows)
so a file with many rows does not outvote one with few; the register model is an ordinary least
squares on the compiled kernels' ptxas counts (h100_autotune_configs.csv's `resources`).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import math
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpu_model_data as data  # noqa: E402
from einsim.simulator.gpu_cost.engine import EngineConstants  # noqa: E402
from einsim.simulator.gpu_cost.resources import RegisterModel  # noqa: E402
from einsim.simulator.gpu_cost.styles import FITTED_FILE, STYLE_NAMES, ElementwiseFit, FittedModel, GemmFit, StyleFit, read_fitted  # noqa: E402

# (section, name, lower, upper) of every fitted number; the styles' fields are fitted per style
GLOBAL_BOUNDS = (
    ("engine", "load_latency_s", 1e-8, 5e-6),
    ("engine", "hbm_extra_latency_s", 0.0, 5e-6),
    ("engine", "latency_softness", 1.0, 12.0),
    ("triton", "mma_sync_ratio", 0.1, 1.0),
    ("triton", "wgmma_n_exponent", 0.0, 1.5),
)
STYLE_BOUNDS = {
    "mma_efficiency": (0.2, 1.0), "softmax_overlap": (0.0, 1.0), "extra_fma_per_score": (0.0, 60.0),
    "mask_fma_per_score": (0.0, 120.0), "program_latency_s": (0.0, 3e-5), "bwd_mma_efficiency": (0.2, 1.0),
    "bwd_fma_per_score": (0.0, 80.0), "bwd_program_latency_s": (0.0, 3e-5),
}


# a kernel family without rows that exercise a number takes it from the family it shares code with
INHERITS = {"einsim-multipass": "einsim", "einsim-decode": "einsim"}


# what the rows of a family can pin at all: decode is memory-bound, so its compute numbers are
# einsim's (the same Triton code generator and tiles)
ONLY = {"einsim-decode": ("program_latency_s",)}


def _exercises(name: str, m) -> bool:
    """Whether a measured row depends on the style number `name`."""
    if m.style in ONLY and name not in ONLY[m.style]:
        return False
    if name.startswith("bwd_"):
        return m.direction == "backward"
    if name == "mask_fma_per_score":
        return m.problem.causal or m.problem.window is not None or m.problem.kv_len % 64 != 0
    return m.direction == "forward"


def parameters(rows=None) -> list[tuple[str, str, str | None, float, float]]:
    """(section, name, style or None, lower, upper) of the fitted vector, in order: the globals,
    then each style's numbers that some fitted row exercises (all of them without rows)."""
    found = [(section, name, None, lo, hi) for section, name, lo, hi in GLOBAL_BOUNDS]
    for style_name in STYLE_NAMES:
        for name, (lo, hi) in STYLE_BOUNDS.items():
            if rows is None or any(m.style == style_name and _exercises(name, m) for m in rows):
                found.append(("styles", name, style_name, lo, hi))
    return found


def to_vector(model: FittedModel, params) -> np.ndarray:
    values = []
    for section, name, style_name, _, _ in params:
        if section == "engine":
            values.append(getattr(model.engine, name))
        elif section == "triton":
            values.append(getattr(model, name))
        else:
            values.append(getattr(model.styles[style_name], name))
    return np.array(values, dtype=float)


def from_vector(vector: np.ndarray, model: FittedModel, params) -> FittedModel:
    """The model with the vector's numbers; a style's number the fit does not exercise is its
    parent family's (INHERITS)."""
    engine = dict(asdict(model.engine))
    triton = {"mma_sync_ratio": model.mma_sync_ratio, "wgmma_n_exponent": model.wgmma_n_exponent}
    styles = {name: dict(asdict(fit)) for name, fit in model.styles.items()}
    fitted_names = set()
    for value, (section, name, style_name, _, _) in zip(vector, params):
        if section == "engine":
            engine[name] = float(value)
        elif section == "triton":
            triton[name] = float(value)
        else:
            styles[style_name][name] = float(value)
            fitted_names.add((style_name, name))
    for child, parent in INHERITS.items():
        for name in STYLE_BOUNDS:
            if (child, name) not in fitted_names:
                styles[child][name] = styles[parent][name]
    return replace(model, engine=EngineConstants(**engine), styles={k: StyleFit(**v) for k, v in styles.items()},
                   **triton)


# stage 2: the operators of a layer other than attention (fitted after the attention styles)
LAYER_BOUNDS = (("gemm", "mma_efficiency", 0.5, 1.2), ("gemm", "program_latency_s", 0.0, 2e-5),
                ("gemm", "hbm_efficiency", 0.3, 1.0), ("elementwise", "strided_efficiency", 0.05, 1.0))
LAYER_FIT_OPS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "rotary_qk")
LAYER_FIT_FLOOR_S = 25e-6  # a single operator's CUDA-graph replay pays ~5 us of graph launch: fit only longer ones


def layer_fit_rows():
    return [m for m in data.h200_layers() if m.op in LAYER_FIT_OPS and not m.held_out
            and m.measured_s >= LAYER_FIT_FLOOR_S]


def _with_layer(model: FittedModel, vector) -> FittedModel:
    gemm, elementwise = dict(asdict(model.gemm)), dict(asdict(model.elementwise))
    for value, (section, name, _, _) in zip(vector, LAYER_BOUNDS):
        (gemm if section == "gemm" else elementwise)[name] = float(value)
    return replace(model, gemm=GemmFit(**gemm), elementwise=ElementwiseFit(**elementwise))


def fit_layers(model: FittedModel) -> tuple[FittedModel, int]:
    """Least squares of log(predicted / measured) over the layer operators the attention fit does
    not cover: GEMMs (tile efficiency, tile latency, skinny-matmul HBM efficiency) and the strided
    rotary kernels."""
    rows = layer_fit_rows()
    if not rows:
        return model, 0
    measured = np.array([m.measured_s for m in rows])

    def residuals(vector):
        candidate = _with_layer(model, vector)
        return np.log(np.array([data.predict_layer(m, candidate) for m in rows]) / measured)
    start = [getattr(model.gemm if section == "gemm" else model.elementwise, name) for section, name, _, _ in LAYER_BOUNDS]
    lower = [lo for _, _, lo, _ in LAYER_BOUNDS]
    upper = [hi for _, _, _, hi in LAYER_BOUNDS]
    result = least_squares(residuals, np.clip(start, lower, upper), bounds=(lower, upper), method="trf",
                           x_scale=np.array(upper) - np.array(lower), diff_step=1e-3, max_nfev=200)
    return _with_layer(model, result.x), len(rows)


def layer_report(model: FittedModel) -> dict:
    """Mean |error| of whole layers and of the fitted operators, fitted and held-out cases apart."""
    out = {}
    print("\nlayers (CUDA-graph replay of one decoder layer; operators alone)")
    for label, keep in (("layer", lambda m: m.op == "layer"), ("operators", lambda m: m.op in LAYER_FIT_OPS
                                                                and m.measured_s >= LAYER_FIT_FLOOR_S)):
        for part, held in (("fit", False), ("held-out", True)):
            rows = [m for m in data.h200_layers() if keep(m) and m.held_out == held]
            errs = [data.predict_layer(m, model) / m.measured_s - 1 for m in rows]
            if errs:
                print(f"  {label:10s} {part:9s} {len(errs):3d} rows  mean |error| {data.mean_abs(errs):6.1%}  "
                      f"max {max(map(abs, errs)):6.1%}")
                out[f"h200_layer.csv / {label} / {part}"] = {"rows": len(errs), "mean_abs": round(data.mean_abs(errs), 4),
                                                             "max_abs": round(max(map(abs, errs)), 4)}
    return out


def fit_registers(path: Path = data.DATA / "h100_autotune_configs.csv") -> tuple[RegisterModel, float, int]:
    """Least squares of ptxas registers per thread on the forward kernels that did not spill:
    registers = base + (a * block_m * Dv + b * block_m * block_n + c * block_n * D) / threads."""
    rows, targets = [], []
    for m, row in zip(data.h100_autotune_configs(path), _config_rows(path)):
        name, _smem, registers, spills = row["resources"].split(";")[0].split(":")
        if int(spills) or int(registers) >= 255:
            continue
        cfg = m.mapping
        threads = cfg.num_warps * 32
        d = dv = max(16, 1 << (m.problem.head_dim - 1).bit_length())
        rows.append([1.0, cfg.block_m * dv / threads, cfg.block_m * cfg.block_n / threads, cfg.block_n * d / threads])
        targets.append(float(registers))
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
    residual = np.array(rows) @ solution - np.array(targets)
    return RegisterModel(*map(float, solution)), float(np.sqrt(np.mean(residual ** 2))), len(targets)


def _config_rows(path: Path) -> list[dict]:
    return [row for row in data._read(path)
            if row["kernel"] == "attention-fwd" and not row["failure"] and row["measured_s"]]


def residual_function(rows, model: FittedModel, params):
    """Weighted log-error of every row as a function of the fitted vector."""
    weights = _weights(rows)

    def residuals(vector: np.ndarray) -> np.ndarray:
        candidate = from_vector(vector, model, params)
        predicted = np.array([data.predict(m, candidate).time_s for m in rows])
        measured = np.array([m.measured_s for m in rows])
        return weights * np.log(predicted / measured)
    return residuals


def _weights(rows) -> np.ndarray:
    counts: dict = {}
    for m in rows:
        counts[m.group] = counts.get(m.group, 0) + 1
    return np.array([1.0 / math.sqrt(counts[m.group]) for m in rows])


def sparsity(rows, params) -> np.ndarray:
    """Which parameters each row depends on: the globals and its own style's (and a parent
    style's numbers its children inherit)."""
    pattern = np.zeros((len(rows), len(params)), dtype=int)
    for i, m in enumerate(rows):
        for j, (_, _, style_name, _, _) in enumerate(params):
            pattern[i, j] = style_name is None or style_name in (m.style, INHERITS.get(m.style))
    return pattern


def fit(rows, model: FittedModel, max_evaluations: int) -> tuple[FittedModel, object, list]:
    params = parameters(rows)
    lower = np.array([p[3] for p in params])
    upper = np.array([p[4] for p in params])
    start = np.clip(to_vector(model, params), lower + 1e-12, upper - 1e-12)
    result = least_squares(residual_function(rows, model, params), start, bounds=(lower, upper), method="trf",
                           jac_sparsity=sparsity(rows, params), x_scale=np.maximum(upper - lower, 1e-12) * 0.1,
                           diff_step=1e-3, max_nfev=max_evaluations, verbose=0)
    return from_vector(result.x, model, params), result, params


def sensitivity(rows, model: FittedModel) -> dict[str, float]:
    """Increase of the fit objective (sum of squared weighted residuals) when each fitted number
    is changed by +10 % (or -10 % when +10 % leaves its bounds): how well each is pinned."""
    params = parameters(rows)
    objective = residual_function(rows, model, params)
    base_vector = to_vector(model, params)
    base = float(np.sum(objective(base_vector) ** 2))
    found = {}
    for j, (section, name, style_name, lo, hi) in enumerate(params):
        vector = base_vector.copy()
        vector[j] = vector[j] * 1.1 if vector[j] * 1.1 <= hi else vector[j] * 0.9
        if vector[j] == base_vector[j]:
            vector[j] = lo + 0.1 * (hi - lo)
        found[_label(section, name, style_name)] = float(np.sum(objective(vector) ** 2)) / base - 1.0
    return found


PIN_TOLERANCE = 0.002  # tests/test_gpu_cost_model.py: a group's mean |error| may move this much


def pin_check(rows, model: FittedModel) -> dict[str, float]:
    """For each fitted number, the largest move of any group's mean or max |error| (the pinned tables of
    tests/test_gpu_cost_model.py) when the number changes by +10 % and by -10 %: a move above
    PIN_TOLERANCE is a failing test. Numbers no row exercises (inherited) are left out."""
    params = parameters([m for m in rows if not m.held_out])

    def group_means(candidate: FittedModel) -> dict:
        groups: dict = {}
        for m, e in zip(rows, data.errors(rows, candidate)):
            groups.setdefault((m.group, m.held_out), []).append(abs(e))
        return {**{(key, "mean"): sum(v) / len(v) for key, v in groups.items()},
                **{(key, "max"): max(v) for key, v in groups.items()}}

    base_vector = to_vector(model, params)
    base = group_means(model)
    found = {}
    for j, (section, name, style_name, _, _) in enumerate(params):
        moves = []
        for factor in (1.1, 0.9):
            vector = base_vector.copy()
            vector[j] *= factor
            means = group_means(from_vector(vector, model, params))
            moves.append(max(abs(means[key] - base[key]) for key in base))
        found[_label(section, name, style_name)] = min(moves)
    return found


def _label(section: str, name: str, style_name: str | None) -> str:
    return f"{section}.{style_name}.{name}" if style_name else f"{section}.{name}"


def report(rows, model: FittedModel, title: str) -> dict:
    """Print and return mean/max |error| per group, fitted and held-out rows apart."""
    errs = data.errors(rows, model)
    out = {}
    print(f"\n{title}")
    print(f"{'file':34s} {'style':16s} {'kind':9s} {'part':9s} {'rows':>4s} {'mean|e|':>8s} {'max|e|':>8s} {'bias':>7s}")
    for part, keep in (("fit", False), ("held-out", True)):
        chosen = [(m, e) for m, e in zip(rows, errs) if m.held_out == keep]
        for key, stats in sorted(data.summary([m for m, _ in chosen], [e for _, e in chosen]).items()):
            print(f"{key[0]:34s} {key[1]:16s} {key[2]:9s} {part:9s} {stats['rows']:4d} {stats['mean_abs']:8.1%} "
                  f"{stats['max_abs']:8.1%} {stats['bias']:+7.1%}")
            out[" / ".join(key) + f" / {part}"] = {k: round(v, 4) for k, v in stats.items()}
    fitted_rows = [e for m, e in zip(rows, errs) if not m.held_out]
    held = [e for m, e in zip(rows, errs) if m.held_out]
    print(f"all fitted rows: {len(fitted_rows)}, mean |error| {data.mean_abs(fitted_rows):.1%}; held-out rows: "
          f"{len(held)}, mean |error| {data.mean_abs(held):.1%}")
    return out


def write(model: FittedModel, provenance: dict, path: Path = FITTED_FILE) -> None:
    document = {
        "provenance": provenance,
        "engine": {f.name: _round(getattr(model.engine, f.name)) for f in fields(EngineConstants)},
        "triton": {"mma_sync_ratio": _round(model.mma_sync_ratio), "wgmma_n_exponent": _round(model.wgmma_n_exponent)},
        "registers": {f.name: _round(getattr(model.registers, f.name)) for f in fields(RegisterModel)},
        "gemm": {f.name: _round(getattr(model.gemm, f.name)) for f in fields(GemmFit)},
        "elementwise": {f.name: _round(getattr(model.elementwise, f.name)) for f in fields(ElementwiseFit)},
        "styles": {name: {f.name: _round(getattr(fit, f.name)) for f in fields(StyleFit)}
                   for name, fit in model.styles.items()},
    }
    header = ("# Written by benchmarks/fit_gpu_model.py: do not edit by hand. tests/test_gpu_cost_model.py pins\n"
              "# every value and the model's error on the data it was fitted to (docs/simulator.md § GPU cost model).\n")
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, width=110))


PINS_FILE = Path(__file__).resolve().parent.parent / "tests" / "test_gpu_cost_model.py"
PINS_BEGIN = "# --- generated from fitted.yaml and the data (see the module docstring) ---\n"
PINS_END = "# fmt: on\n"


def pins_block(path: Path = FITTED_FILE) -> str:
    """The pinned tables of tests/test_gpu_cost_model.py: every number of `path` as written, the
    mean |error| of every (file, style, kind, fitted/held-out) group and of whole layers."""
    document = yaml.safe_load(path.read_text())
    model = read_fitted(path)
    lines = [PINS_BEGIN.rstrip("\n"), "FITTED = {"]
    for section in ("engine", "triton", "registers", "gemm", "elementwise"):
        lines.append(f"    {section!r}: {document[section]!r},")
    lines.append("    'styles': {")
    lines += [f"        {name!r}: {values!r}," for name, values in document["styles"].items()]
    lines += ["    },", "}", "ERRORS = {  # (file, style, kind, part) -> (rows, mean |error|, max |error|)"]
    rows = data.measurements()
    groups: dict = {}
    for m, e in zip(rows, data.errors(rows, model)):
        key = (m.source, m.style if m.kind != "config" else f"{m.style} configs", m.kind,
               "held-out" if m.held_out else "fit")
        groups.setdefault(key, []).append(abs(e))
    lines += [f"    {key!r}: ({len(v)}, {sum(v) / len(v):.4f}, {max(v):.4f})," for key, v in sorted(groups.items())]
    lines += ["}", "LAYER_ERRORS = {  # (what, part) -> (rows, mean |error|) of whole layers, h200_layer.csv"]
    layers: dict = {}
    for m in data.h200_layers():
        if m.op == "layer":
            layers.setdefault(("layer", "held-out" if m.held_out else "fit"), []).append(
                abs(data.predict_layer(m, model) / m.measured_s - 1))
    lines += [f"    {key!r}: ({len(v)}, {sum(v) / len(v):.4f})," for key, v in sorted(layers.items())]
    return "\n".join(lines + ["}"]) + "\n"


def write_pins(path: Path = PINS_FILE) -> None:
    """Rewrite the generated tables of the test that pins the fit (between its two markers)."""
    text = path.read_text()
    head, rest = text.split(PINS_BEGIN, 1)
    _, tail = rest.split(PINS_END, 1)
    path.write_text(head + pins_block() + PINS_END + tail)


def _round(value: float) -> float:
    return float(f"{value:.5g}")


def _hashes() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            for path in sorted(data.DATA.glob("*.csv"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report the committed constants' errors, fit nothing")
    parser.add_argument("--max-evaluations", type=int, default=60)
    parser.add_argument("--sensitivity", action="store_true", help="print how much each constant is pinned")
    parser.add_argument("--pin-check", action="store_true",
                        help="for each fitted number, whether a 10 %% change fails the pinned error tables")
    parser.add_argument("--layers-only", action="store_true", help="refit only the layer operators (stage 2)")
    parser.add_argument("--pins", action="store_true",
                        help="only rewrite the pinned tables of tests/test_gpu_cost_model.py from fitted.yaml")
    args = parser.parse_args(argv)
    if args.pins:
        write_pins()
        print(f"rewrote the pinned tables of {PINS_FILE}")
        return 0
    rows = data.measurements()
    model = read_fitted()
    if args.layers_only:
        model, count = fit_layers(model)
        provenance = dict(model.provenance)
        provenance["layer_rows"] = count
        provenance["layer_errors"] = layer_report(model)
        write(model, provenance)
        print(f"wrote {FITTED_FILE} (layer operators only, {count} rows)")
        return 0
    if args.check:
        report(rows, model, "committed constants")
        layer_report(model)
        if args.pin_check:
            loose = 0
            for name, move in pin_check(rows, model).items():
                caught = move > PIN_TOLERANCE
                loose += not caught
                print(f"  +-10 % {name:45s} moves a pinned |error| by >= {move:.2%}  {'caught' if caught else 'NOT CAUGHT'}")
            print(f"{loose} fitted number(s) whose 10 % change the pinned tables do not catch")
        if args.sensitivity:
            for name, value in sensitivity([m for m in rows if not m.held_out], model).items():
                print(f"  +10 % {name:45s} objective {value:+.2%}")
        return 0
    started = time.time()
    registers, rms, count = fit_registers()
    model = replace(model, registers=registers)
    print(f"register model: {registers} (rms {rms:.1f} registers over {count} compiled kernels)")
    fitted_rows = [m for m in rows if not m.held_out]
    model, result, params = fit(fitted_rows, model, args.max_evaluations)
    print(f"least squares: {result.message} ({result.nfev} evaluations, {time.time() - started:.0f} s), "
          f"objective {2 * result.cost:.4f}")
    errors = report(rows, model, "fitted constants")
    write(model, dict(model.provenance, status="stage 1 written; the layer fit follows"))  # a checkpoint
    model, layer_rows = fit_layers(model)
    layer_errors = layer_report(model)
    at_bounds = [_label(s, n, st) for (s, n, st, lo, hi), v in zip(params, result.x)
                 if abs(v - lo) < 1e-9 * max(1, abs(lo)) or abs(v - hi) < 1e-9 * max(1, abs(hi))]
    provenance = {
        "command": "PYTHONPATH=. python benchmarks/fit_gpu_model.py",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "data": _hashes(),
        "rows": {"fitted": len(fitted_rows), "held_out": len(rows) - len(fitted_rows)},
        "held_out_lengths": list(data.HELD_OUT_LENGTHS),
        "objective": round(2 * float(result.cost), 6),
        "at_bounds": at_bounds,
        "inherited": sorted(_label("styles", n, c) + f" (= {p})" for c, p in INHERITS.items() for n in STYLE_BOUNDS
                            if ("styles", n, c) not in {(s_, n_, st) for s_, n_, st, _, _ in params}),
        "register_rms": round(rms, 2),
        "errors": errors,
        "layer_rows": layer_rows,
        "layer_errors": layer_errors,
    }
    write(model, provenance)
    write_pins()
    print(f"wrote {FITTED_FILE} and the pinned tables of {PINS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
