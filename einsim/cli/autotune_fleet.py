"""`einsim autotune --model NAME --all-shapes`: tune every attention shape a model hits (prefill
1k-32k, decode batch 1-128 x cache 4k-128k), one study per kernel and tuning-cache bucket, most
valuable first, within --time-budget, on --workers / --gpus processes sharing the storage;
export every winner with its provenance. docs/autotune.md § Tuning a whole model."""

from __future__ import annotations

import argparse
import math
import sys
import time

from einsim.cli.output import print_json
from einsim.text import fit_text, render_table


def _lists(args):
    from einsim.shapes import parse_lengths

    return dict(prefill_lengths=parse_lengths(args.prefill_lengths, "--prefill-lengths"),
                decode_batches=parse_lengths(args.decode_batches, "--decode-batches"),
                decode_caches=parse_lengths(args.decode_caches, "--decode-caches"))


def worker_argv(args, kernels, deadline: float, workers: int) -> list[str]:
    """The options a spawned worker needs to walk the same shapes in the same studies."""
    argv = ["--model", args.model, "--all-shapes", "--kernel", ",".join(kernels), "--target", args.target,
            "--storage", args.storage, "--prefill-lengths", args.prefill_lengths,
            "--decode-batches", args.decode_batches, "--decode-caches", args.decode_caches,
            "--max-kv-gib", str(args.max_kv_gib), "--deadline", repr(deadline), "--no-progress",
            "--worker-count", str(workers)]
    if args.trials:
        argv += ["--trials", str(args.trials)]
    if args.dry_run:
        argv.append("--dry-run")
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    return argv


def provenance() -> dict:
    """Library versions of this process (what made the measured numbers)."""
    found = {"python": sys.version.split()[0]}
    for name in ("torch", "triton", "optuna"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def run_fleet(args: argparse.Namespace) -> int:
    from einsim.autotune import fleet

    with fleet.sigterm_handling():
        return _run_fleet(args, fleet)


def _run_fleet(args: argparse.Namespace, fleet) -> int:
    from einsim.autotune.storage import resolve_storage_url
    from einsim.errors import ConfigError
    from einsim.simulator.models import load_model

    if not args.model:
        raise ConfigError("--all-shapes needs --model NAME (einsim models list)")
    if args.cascade:
        raise ConfigError("--all-shapes tunes the built-in kernels; --cascade tunes one problem at a time")
    kernels = tuple(k.strip() for k in args.kernel.split(",")) if args.kernel else fleet.DEFAULT_KERNELS
    started = time.time()  # the budget counts from here: imports, warm-up and compiles included
    if not (math.isfinite(args.max_kv_gib) and args.max_kv_gib > 0):  # NaN compared false: no shape was skipped
        raise ConfigError(f"--max-kv-gib must be a positive number of GiB, got {args.max_kv_gib}")
    if args.deadline is not None and not math.isfinite(args.deadline):
        raise ConfigError(f"--deadline must be a time in seconds since the epoch, got {args.deadline}")
    gpus = _gpus(args.gpus)
    workers = args.workers if args.workers is not None else (len(gpus) if gpus else 1)
    if workers < 1:  # 0 used to mean the default
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers > fleet.MAX_WORKERS:
        raise ConfigError(f"--workers {workers}: at most {fleet.MAX_WORKERS} worker processes on one host "
                          "(one per GPU is the point; more hosts share a study through PostgreSQL)")
    model = load_model(args.model)
    shapes, skipped = fleet.model_shapes(model, kernels, max_kv_gib=args.max_kv_gib, **_lists(args))
    ordered = fleet.prioritise(shapes, args.target)
    budget = args.time_budget if args.time_budget is not None else math.inf
    if not budget > 0:  # NaN too
        raise ConfigError(f"--time-budget must be positive, got {args.time_budget}")
    deadline = args.deadline if args.deadline is not None else started + min(budget, 10 * 365 * 86400)
    from einsim.cli.autotune import announce_created, default_storage_file

    created = None if args.worker is not None else default_storage_file(args.storage)
    args.storage = resolve_storage_url(args.storage)
    seed = None if args.seed is None else args.seed + (args.worker or 0)
    fleet.interrupt_on_sigterm()
    report = progress_line(len(ordered), args.worker, started)
    if args.worker is not None:  # a spawned worker: tune, leave the table to the parent
        fleet.run_shapes(ordered, target=args.target, storage=args.storage, trials=args.trials,
                         deadline=deadline, dry_run=args.dry_run, seed=seed, report=report,
                         worker=(args.worker, args.worker_count or 1))
        return 0
    print(f"{model.name}: {len(ordered)} shapes, most valuable first, on {workers} worker(s)"
          + (f", {budget:g} s budget" if math.isfinite(budget) else ""), file=sys.stderr, flush=True)
    if workers > 1 or gpus:
        if args.storage == ":memory:":
            raise ConfigError("--workers/--gpus share studies through --storage: give a SQLite file or a "
                              "PostgreSQL URL, not :memory:")
        wait_s = (deadline - time.time()) + 300 if math.isfinite(budget) else 7 * 86400
        codes = fleet.spawn_workers(worker_argv(args, kernels, deadline, workers), workers, gpus, wait_s)
        if any(codes):
            print(f"workers exited with {codes}; the studies keep every finished trial", file=sys.stderr)
        fleet.finish_without_interrupts()
        outcomes = fleet.collect(ordered, target=args.target, storage=args.storage, trials=args.trials,
                                 dry_run=args.dry_run)
    else:
        outcomes = fleet.run_shapes(ordered, target=args.target, storage=args.storage, trials=args.trials,
                                    deadline=deadline, dry_run=args.dry_run, seed=seed, report=report)
        fleet.finish_without_interrupts()
    wall_s = time.time() - started
    announce_created(created)
    exported = export(outcomes, args) if not args.dry_run and not args.no_export else []
    if args.json:
        print_json(fleet_json(outcomes, skipped, workers, wall_s, exported))
    else:
        print_fleet(outcomes, skipped, model.name, workers, wall_s, exported, args.dry_run)
    return 0


def progress_line(total: int, worker: int | None, started: float):
    """report(index, outcome) for run_shapes: one line per shape on stderr as it ends, so a run
    cut short (a job's time limit) has said what it finished; stdout keeps the table/JSON."""
    who = "" if worker is None else f" worker {worker}"

    def report(index: int, outcome) -> None:
        if (outcome.status.startswith("not reached") and outcome.result is None) or "another worker" in outcome.status:
            return
        r = outcome.result
        line = f"[fleet{who}] {index + 1}/{total} {outcome.shape.label}: {outcome.status}"
        if r is not None:
            best = _measured(r, "best") if r.best is not None else None
            default = _measured(r, "default") if r.default is not None else None
            line += f", {len(r.evaluated)} configs, best {_us(best)} us, default {_us(default)} us"
        print(f"{line} ({time.time() - started:.1f} s)", file=sys.stderr, flush=True)
    return report


def _measured(result, label: str):
    """The retest median of `label` if the study has one, else the study's own time."""
    times = result.retest.get(label) if result.retest else None
    if times:
        return sorted(times)[len(times) // 2]
    trial = result.best if label == "best" else result.default
    return trial.measured_s if trial is not None else None


def export(outcomes, args) -> list[str]:
    from einsim.autotune.timing import spread
    from einsim.kernels.tuned import export_best

    written = []
    versions = provenance()
    for outcome in outcomes:
        result = outcome.result
        if result is None or result.best is None or result.gpu in ("", "simulator", "unknown"):
            continue
        best_s = _measured(result, "best")
        default_s = _measured(result, "default")
        path = export_best(
            result.kernel, outcome.shape.problem, result.gpu, result.best.config, measured_s=best_s,
            predicted_s=result.best.predicted_s, default_s=default_s, study=result.study_name,
            storage=result.storage, evaluations=len(result.evaluated), directory=args.export,
            provenance={**versions, "status": outcome.status,
                        "retest_spread": {k: round(spread(v), 4) for k, v in result.retest.items()},
                        "command": f"einsim autotune --model {args.model} --all-shapes"})
        written.append(str(path))
    return sorted(set(written))


def _us(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f}"


def _gpus(text: str | None) -> list[str] | None:
    """--gpus as CUDA_VISIBLE_DEVICES entries: indices (0, 1, ...) or UUIDs (GPU-..., MIG-...),
    each once (two workers on one GPU disturb each other's timings)."""
    from einsim.errors import ConfigError, brief

    if not text:
        return None
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    for gpu in gpus:
        if not (gpu.isdigit() or gpu.startswith(("GPU-", "MIG-"))):
            raise ConfigError(f"--gpus {brief(text)}: {brief(gpu)} is not a GPU index (0, 1, ...) or UUID "
                              "(GPU-...; nvidia-smi -L lists them)")
        if gpus.count(gpu) > 1:
            raise ConfigError(f"--gpus {brief(text)}: GPU {gpu} is given twice; for several workers per GPU "
                              "use --workers")
    return gpus


def print_fleet(outcomes, skipped, model: str, workers: int, wall_s: float, exported, dry_run: bool) -> None:
    rows = []
    for o in outcomes:
        r = o.result
        best = _measured(r, "best") if r is not None and r.best is not None else None
        default = _measured(r, "default") if r is not None and r.default is not None else None
        row = [o.shape.label, o.status, len(r.evaluated) if r else 0, f"{r.budget}" if r else "-"]
        if not dry_run:  # a dry run's default time is the prediction itself
            row.append(_us(o.shape.predicted_default_s))
        rows.append(row + [_us(default), _us(best), f"{default / best:.2f}x" if best and default else "-"])
    times = "simulated by the GPU model (dry run, nothing measured)" if dry_run else "measured on the GPU"
    print(fit_text(f"{model}: {len(outcomes)} shapes (most valuable first), {workers} worker(s), {wall_s:.0f} s; "
                   f"default and best times {times}", "  "))
    headers = ["shape", "status", "configs", "budget"] + ([] if dry_run else ["predicted default us"])
    print(render_table(headers + ["default us", "best us", "vs default"], rows, drop=["predicted default us"]))
    for reason in skipped:
        print(f"skipped: {reason}")
    for path in exported:
        print(f"tuning cache: {path}")


def fleet_json(outcomes, skipped, workers: int, wall_s: float, exported) -> dict:
    shapes = []
    for o in outcomes:
        r = o.result
        shapes.append({"kernel": o.shape.kernel, "phase": o.shape.phase, "bucket": o.shape.bucket,
                       "problem": o.shape.problem.to_dict(), "status": o.status,
                       "predicted_default_s": o.shape.predicted_default_s,
                       "evaluated": len(r.evaluated) if r else 0,
                       "best_s": _measured(r, "best") if r and r.best else None,
                       "default_s": _measured(r, "default") if r and r.default else None,
                       "best_config": r.best.config if r and r.best else None,
                       "study": r.study_name if r else None})
    return {"shapes": shapes, "skipped": skipped, "workers": workers, "wall_s": wall_s,
            "exported": exported}
