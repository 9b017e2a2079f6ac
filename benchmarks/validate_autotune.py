#!/usr/bin/env python3
"""Validate simulator-guided autotuning on the GPU, in one run: exhaustive measurement of every
config of the forward and decode kernels at several shapes, the simulator's rank correlation with
it, how many trials the guided search needs to come within 3 % of the exhaustive best, and the
tuned config against @triton.autotune over the same configs.

    PYTHONPATH=. python benchmarks/validate_autotune.py --out $OUT          # on the GPU (device tool)
    PYTHONPATH=. python benchmarks/validate_autotune.py --from-csv DIR/measurements.csv   # analysis only, CPU

The second form re-predicts every measured config with the current GPU cost model (autotune/predict.py over simulator/gpu_cost) and
replays the guided search against the measured times: how model changes are checked without a GPU.
Writes measurements.csv, guided.csv, summary.json, log.txt under --out; prints a table.
docs/autotune.md reports the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from einsim.autotune.evaluate import Measurement, ReplayEvaluator  # noqa: E402
from einsim.autotune.space import build_space, config_dict, config_key  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.autotune.predict import predict_kernel  # noqa: E402

TARGET = "h100-sxm"
WITHIN = 0.03  # "within 3 % of the exhaustive best"
SHAPES = [
    ("attention-fwd", Problem(batch=4, q_heads=16, kv_heads=16, q_len=4096, kv_len=4096, head_dim=128, causal=True)),
    ("attention-fwd", Problem(batch=16, q_heads=16, kv_heads=16, q_len=1024, kv_len=1024, head_dim=128, causal=True)),
    ("attention-fwd", Problem(batch=8, q_heads=16, kv_heads=16, q_len=2048, kv_len=2048, head_dim=64, causal=False)),
    ("decode", Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)),
    ("decode", Problem(batch=1, q_heads=32, kv_heads=8, q_len=1, kv_len=32768, head_dim=128)),
    ("decode", Problem(batch=32, q_heads=32, kv_heads=8, q_len=1, kv_len=2048, head_dim=128)),
]


def shape_id(kernel: str, problem: Problem) -> str:
    from einsim.autotune.naming import problem_tag

    return f"{kernel}:{problem_tag(problem)}"


def compile_group(kernel: str, problem: Problem) -> tuple:
    """Shapes whose kernels compile to the same binaries (same constexprs)."""
    return (kernel, problem.head_dim, problem.v_head_dim, problem.causal, problem.window, problem.dtype, problem.group_size)


def log(message: str, stream=None) -> None:
    print(message, flush=True)
    if stream is not None:
        stream.write(message + "\n")
        stream.flush()


# ------------------------------------------------------------------------------------------
# GPU phase
# ------------------------------------------------------------------------------------------

_WORKER_INPUTS: dict = {}


def _precompile(task):
    """Worker: compile (first launch) one config; returns (group, key, seconds, failure)."""
    kernel, problem, params, group = task
    import torch

    from einsim.kernels.registry import get_kernel

    spec = get_kernel(kernel)
    inputs = _WORKER_INPUTS.get(problem)
    if inputs is None:
        inputs = _WORKER_INPUTS[problem] = spec.make_inputs(problem, problem.dtype, "cuda", 0)
    started = time.perf_counter()
    try:
        spec.launch(spec.config_type(**params), inputs)
        torch.cuda.synchronize()
        failure = ""
    except Exception as error:  # recorded; the main process measures and classifies it again
        failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
    return group, config_key(params), time.perf_counter() - started, failure


def precompile_all(spaces, workers: int, stream) -> dict:
    """Compile every config of every compile group in parallel processes (fills Triton's disk
    cache); returns {(group, key): seconds} — the cold compile-and-first-run time of each."""
    import concurrent.futures
    import multiprocessing

    tasks, seen = [], set()
    for kernel, problem, space in spaces:
        group = compile_group(kernel, problem)
        for config, _ in space.ranked:
            marker = (group, config_key(config))
            if marker not in seen:
                seen.add(marker)
                tasks.append((kernel, problem, config_dict(config), group))
    # Longest compiles (big tiles, many stages) first, spread across workers.
    tasks.sort(key=lambda t: -(t[2].get("BLOCK_M", 16) * t[2].get("BLOCK_N", 16) * t[2].get("num_stages", 1)))
    started = time.perf_counter()
    results = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for group, key, seconds, failure in pool.map(_precompile, tasks, chunksize=1):
            results[(group, key)] = seconds
    log(f"precompiled {len(tasks)} kernels in {time.perf_counter() - started:.1f} s with {workers} processes",
        stream)
    return results


def write_rows(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _compiled_kernels(spec) -> dict[int, object]:
    """Every compiled Triton kernel of the modules the kernel's launcher uses, by id."""
    import importlib

    from triton.runtime.jit import JITFunction

    found = {}
    package = spec.launcher.split(":")[0].rsplit(".", 1)[0]
    import sys as _sys

    for name, module in list(_sys.modules.items()):
        if not name.startswith(package) or module is None:
            continue
        for value in vars(module).values():
            if isinstance(value, JITFunction):
                for cache in value.device_caches.values():
                    for kernel in cache[0].values():
                        found[id(kernel)] = kernel
    importlib.invalidate_caches()
    return found


def _resources(kernels) -> str:
    """'name:shared bytes:registers:spills' of each kernel a config compiled (the compiler's numbers)."""
    parts = []
    for kernel in kernels:
        try:
            parts.append(f"{kernel.name}:{kernel.metadata.shared}:{kernel.n_regs}:{kernel.n_spills}")
        except Exception:  # a kernel not loaded yet has no register count
            continue
    return ";".join(parts)


def measure_all(spaces, compile_s: dict, stream, warmup_ms: float, rep_ms: float, out: Path) -> list[dict]:
    from einsim.autotune.evaluate import GpuEvaluator

    rows = []
    seen_resources: dict = {}
    for kernel, problem, space in spaces:
        evaluator = GpuEvaluator(kernel, problem, warmup_ms=warmup_ms, rep_ms=rep_ms)
        started = time.perf_counter()
        group = compile_group(kernel, problem)
        configs = [c for c, _ in space.ranked]
        if config_key(space.default) not in {config_key(c) for c in configs}:
            configs.append(space.default)
        for config in configs:
            before = _compiled_kernels(evaluator.spec)
            m = evaluator(config)
            after = _compiled_kernels(evaluator.spec)
            resources = _resources(kernel for key_, kernel in after.items() if key_ not in before)
            resources = resources or seen_resources.get((group, config_key(config)), "")
            seen_resources[(group, config_key(config))] = resources
            if m.failure_kind == "fatal":
                raise RuntimeError(f"{kernel} {config}: {m.failure}")
            rows.append({
                "kernel": kernel, "shape": shape_id(kernel, problem), "config": config_key(config),
                "measured_s": m.time_s if m.ok else "", "failure": m.failure, "failure_kind": m.failure_kind,
                "error": m.error, "first_call_s": m.first_call_s, "bench_s": m.bench_s,
                "compile_s": compile_s.get((group, config_key(config)), m.first_call_s),
                "is_default": config_key(config) == config_key(space.default), "resources": resources,
                "gpu": evaluator.gpu_name,
            })
        # Test-retest: every config again on freshly allocated inputs, for the noise ceiling of
        # any rank correlation with these times.
        del evaluator
        retest = GpuEvaluator(kernel, problem, warmup_ms=warmup_ms, rep_ms=rep_ms, seed=1)
        mine = [r for r in rows if r["shape"] == shape_id(kernel, problem)]
        for row, config in zip(mine, configs):
            m = retest(config)
            row["retest_s"] = m.time_s if m.ok else ""
        del retest
        ok = sum(1 for r in rows if r["shape"] == shape_id(kernel, problem) and r["measured_s"] != "")
        log(f"measured {shape_id(kernel, problem)}: {ok}/{len(configs)} configs ran in "
            f"{time.perf_counter() - started:.1f} s", stream)
        write_rows(rows, out / "measurements.csv")  # kept if a later step runs out of time
    return rows


class _LauncherKernel:
    """The kernel's launcher shaped like a JITFunction for triton's Autotuner: `run` builds the
    config from the autotuner's kwargs and launches. The launchers compute config-dependent
    arguments (grid, TMA descriptors, the split plan) that @triton.autotune on the raw
    @triton.jit function could not, so the real Autotuner class wraps the launcher instead."""

    def __init__(self, spec, inputs):
        self.spec, self.inputs = spec, inputs
        self.arg_names = ["q", "k", "v"]
        self.fields = [f for f in spec.config_type.__dataclass_fields__]

        def launcher(q, k, v):  # what Autotuner.base_fn names in its messages
            return None

        self.fn = launcher

    def run(self, *args, grid=None, warmup=None, **kwargs):
        config = self.spec.config_type(**{f: kwargs[f] for f in self.fields if f in kwargs})
        return self.spec.launch(config, self.inputs)


def triton_autotune_pick(kernel, problem, configs) -> tuple[str, float]:
    """(key of the config @triton.autotune picks among `configs`, its tuning seconds)."""
    import triton

    from einsim.kernels.registry import get_kernel

    spec = get_kernel(kernel)
    inputs = spec.make_inputs(problem, problem.dtype, "cuda", 1)
    triton_configs = []
    for config in configs:
        params = config_dict(config)
        warps, stages = params.pop("num_warps"), params.pop("num_stages")
        triton_configs.append(triton.Config(params, num_warps=warps, num_stages=stages))
    tuner = triton.autotune(configs=triton_configs, key=["q"])(_LauncherKernel(spec, inputs))
    started = time.perf_counter()
    tuner.run(inputs["q"], inputs["k"], inputs["v"])
    seconds = time.perf_counter() - started
    best = tuner.best_config
    params = dict(best.kwargs, num_warps=best.num_warps, num_stages=best.num_stages)
    return config_key(spec.config_type(**params)), seconds


def final_comparison(kernel, problem, keys: dict[str, str], repeats: int = 3) -> dict[str, float]:
    """Re-time the named configs interleaved, `repeats` rounds, median of medians."""
    import triton.testing

    from einsim.kernels.registry import get_kernel

    spec = get_kernel(kernel)
    inputs = spec.make_inputs(problem, problem.dtype, "cuda", 2)
    times: dict[str, list[float]] = {name: [] for name in keys}
    for _ in range(repeats):
        for name, key in keys.items():
            config = spec.config_type(**json.loads(key))
            times[name].append(triton.testing.do_bench(lambda: spec.launch(config, inputs), warmup=25, rep=100,
                                                       return_mode="median") * 1e-3)
    return {name: statistics.median(values) for name, values in times.items()}


# ------------------------------------------------------------------------------------------
# Analysis (CPU): correlation, replayed guided search
# ------------------------------------------------------------------------------------------

def trials_to_within(trials, best_s: float) -> tuple[int | None, list]:
    """Evaluated configs until the best so far is within WITHIN of `best_s` (None if never)."""
    evaluated = sorted((t for t in trials if t.evaluated), key=lambda t: t.number)
    so_far = math.inf
    for count, trial in enumerate(evaluated, start=1):
        if trial.measured_s is not None:
            so_far = min(so_far, trial.measured_s)
        if so_far <= best_s * (1 + WITHIN):
            return count, evaluated[:count]
    return None, evaluated


def analyse(rows: list[dict], seeds: int, stream) -> tuple[list[dict], list[dict]]:
    from scipy.stats import spearmanr

    from einsim.autotune.study import default_budget, tune

    from einsim.kernels.registry import get_kernel

    by_shape: dict[str, list[dict]] = {}
    for row in rows:
        # Keys as the kernel's config type writes them today (a field added since the
        # measurement takes its default, which is what ran).
        spec = get_kernel(row["kernel"])
        row["config"] = config_key(spec.config_type(**json.loads(row["config"])))
        by_shape.setdefault(row["shape"], []).append(row)
    problems = {shape_id(k, p): (k, p) for k, p in SHAPES}
    summaries, guided_rows = [], []
    for shape, shape_rows in by_shape.items():
        kernel, problem = problems[shape]
        space = build_space(kernel, problem, TARGET)
        by_key = space.by_key()
        ok = [r for r in shape_rows if r["measured_s"] not in ("", None)]
        for r in shape_rows:
            config = json.loads(r["config"])
            r["predicted_s"] = predict_kernel(kernel, config, problem, TARGET).time_s
        measured = {r["config"]: float(r["measured_s"]) for r in ok}
        exhaustive_best_key = min(measured, key=measured.get)
        best_s = measured[exhaustive_best_key]
        in_space = [r for r in ok if r["config"] in by_key]
        rho = spearmanr([r["predicted_s"] for r in in_space], [float(r["measured_s"]) for r in in_space]).statistic
        both = [r for r in in_space if r.get("retest_s") not in ("", None)]
        retest_rho = spearmanr([float(r["measured_s"]) for r in both],
                               [float(r["retest_s"]) for r in both]).statistic if len(both) > 2 else None
        cost = {r["config"]: float(r["compile_s"] or 0) + float(r["first_call_s"] or 0) + float(r["bench_s"] or 0)
                for r in shape_rows}
        exhaustive_wall = sum(cost.get(k, 0.0) for k in by_key)
        replay = ReplayEvaluator({
            r["config"]: Measurement(float(r["measured_s"]) if r["measured_s"] not in ("", None) else math.nan,
                                     failure=r["failure"], failure_kind=r["failure_kind"], source="replay")
            for r in shape_rows}, gpu_name=shape_rows[0].get("gpu"))
        counts, walls = [], []
        budget = default_budget(space.size)
        for seed in range(seeds):
            started = time.perf_counter()
            result = tune(kernel, problem, TARGET, trials=space.size, storage=":memory:", evaluator=replay,
                          seed=seed, stop_below_s=best_s * (1 + WITHIN))
            sampler_s = time.perf_counter() - started
            count, used = trials_to_within(result.trials, best_s)
            wall = sum(cost.get(config_key(t.config), 0.0) for t in used) + sampler_s
            counts.append(count if count is not None else space.size + 1)
            walls.append(wall)
            guided_rows.append({"shape": shape, "seed": seed, "trials_to_within_3pct": count,
                                "space": space.size, "wall_s": round(wall, 2), "sampler_s": round(sampler_s, 2)})
        ranked_keys = space.keys()
        sim_top1 = measured.get(ranked_keys[0])
        default_key = config_key(space.default)
        summary = {
            "shape": shape, "kernel": kernel, "configs": space.size, "ran": len(ok),
            "failed": len(shape_rows) - len(ok), "spearman": rho, "retest_spearman": retest_rho,
            "exhaustive_best_us": best_s * 1e6, "exhaustive_best": exhaustive_best_key,
            "default_us": measured.get(default_key, math.nan) * 1e6,
            "simulator_top1_us": (sim_top1 or math.nan) * 1e6,
            "simulator_top1_within": (sim_top1 / best_s - 1) if sim_top1 else None,
            "trials_to_3pct_median": statistics.median(counts), "trials_to_3pct_max": max(counts),
            "trials_fraction_median": statistics.median(counts) / space.size,
            "guided_wall_median_s": statistics.median(walls), "exhaustive_wall_s": exhaustive_wall,
            "default_budget": budget,
            "rank_of_best_in_prediction": ranked_keys.index(exhaustive_best_key) + 1
            if exhaustive_best_key in ranked_keys else None,
        }
        summaries.append(summary)
    return summaries, guided_rows


def print_table(summaries, extra: dict | None = None, stream=None) -> None:
    from einsim.text import render_table

    headers = ["shape", "configs", "spearman", "retest", "best us", "default us", "sim top-1", "trials to 3% (med/max)",
               "fraction", "guided s", "exhaustive s"]
    rows = []
    for s in summaries:
        rows.append([
            s["shape"], s["configs"], f"{s['spearman']:.2f}",
            "-" if s["retest_spearman"] is None else f"{s['retest_spearman']:.2f}", f"{s['exhaustive_best_us']:.1f}",
            f"{s['default_us']:.1f}", "-" if s["simulator_top1_within"] is None else f"+{100 * s['simulator_top1_within']:.1f}%",
            f"{s['trials_to_3pct_median']:g}/{s['trials_to_3pct_max']}", f"{100 * s['trials_fraction_median']:.0f}%",
            f"{s['guided_wall_median_s']:.1f}", f"{s['exhaustive_wall_s']:.1f}",
        ])
    log(render_table(headers, rows), stream)
    if extra:
        headers = ["shape", "tuned us", "autotune us", "default us", "exhaustive us", "autotune pick", "autotune s",
                   "guided GPU trials", "guided GPU s"]
        rows = []
        for shape, e in extra.items():
            rows.append([shape, f"{e['tuned_us']:.1f}", f"{e['autotune_us']:.1f}", f"{e['default_us']:.1f}",
                         f"{e['exhaustive_us']:.1f}", e["autotune_same_as_exhaustive"], f"{e['autotune_s']:.1f}",
                         e["guided_trials"], f"{e['guided_s']:.1f}"])
        log("\n" + render_table(headers, rows), stream)


def extra_for_shape(kernel, problem, space, rows, extra, stream) -> None:
    """The real guided search on the GPU (compiles hit the cache the precompile filled), then
    @triton.autotune over the same configs, then the configs they picked re-timed side by side."""
    from einsim.autotune.study import tune

    shape = shape_id(kernel, problem)
    ok = {r["config"]: float(r["measured_s"]) for r in rows if r["shape"] == shape and r["measured_s"] != ""}
    started = time.perf_counter()
    result = tune(kernel, problem, TARGET, storage=f"sqlite:////tmp/validate-{os.getpid()}.db", seed=0)
    guided_s = time.perf_counter() - started
    runnable = [c for c, _ in space.ranked if config_key(c) in ok]
    autotune_key, autotune_s = triton_autotune_pick(kernel, problem, runnable)
    exhaustive_key = min(ok, key=ok.get)
    keys = {"tuned": config_key(result.best.config), "autotune": autotune_key,
            "default": config_key(space.default), "exhaustive": exhaustive_key}
    final = final_comparison(kernel, problem, keys)
    extra[shape] = {
        "tuned_us": final["tuned"] * 1e6, "autotune_us": final["autotune"] * 1e6,
        "default_us": final["default"] * 1e6, "exhaustive_us": final["exhaustive"] * 1e6,
        "tuned": keys["tuned"], "autotune": autotune_key, "exhaustive": exhaustive_key,
        "autotune_same_as_exhaustive": autotune_key == exhaustive_key, "autotune_s": autotune_s,
        "guided_trials": len(result.evaluated), "guided_s": guided_s,
    }
    log(f"{shape}: tuned {final['tuned'] * 1e6:.1f} us, @triton.autotune {final['autotune'] * 1e6:.1f} us "
        f"({autotune_s:.1f} s), default {final['default'] * 1e6:.1f} us", stream)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "results/autotune"))
    parser.add_argument("--from-csv", help="analyse an earlier run's measurements.csv (no GPU)")
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds replayed per shape")
    parser.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--warmup-ms", type=float, default=10.0)
    parser.add_argument("--rep-ms", type=float, default=50.0)
    parser.add_argument("--only", help="comma-separated kernels to run (default all)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stream = open(out / "log.txt", "a")
    shapes = [(k, p) for k, p in SHAPES if not args.only or k in args.only.split(",")]
    extra: dict = {}

    if args.from_csv:
        with open(args.from_csv) as handle:
            rows = list(csv.DictReader(handle))
    else:
        import torch

        log(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", stream)
        spaces = [(k, p, build_space(k, p, TARGET)) for k, p in shapes]
        compile_s = precompile_all(spaces, args.workers, stream)
        rows = measure_all(spaces, compile_s, stream, args.warmup_ms, args.rep_ms, out)
        for kernel, problem, space in spaces:
            try:
                extra_for_shape(kernel, problem, space, rows, extra, stream)
            except Exception:  # keep the measurements and the analysis whatever breaks here
                import traceback

                log(f"{shape_id(kernel, problem)}: GPU comparison failed:\n{traceback.format_exc()}", stream)

    summaries, guided_rows = analyse(rows, args.seeds, stream)
    with open(out / "guided.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(guided_rows[0]))
        writer.writeheader()
        writer.writerows(guided_rows)
    with open(out / ("summary.json" if not args.from_csv else "summary-replayed.json"), "w") as handle:
        json.dump({"summaries": summaries, "gpu_comparison": extra}, handle, indent=2, default=str)
    with open(out / "predictions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["shape", "config", "predicted_s", "measured_s", "failure"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in ("shape", "config", "predicted_s", "measured_s", "failure")})
    print_table(summaries, extra, stream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
