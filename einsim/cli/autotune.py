"""`einsim autotune`: tune a kernel's config for one problem with an Optuna study guided by the
simulator, show the best configs against the default (and exhaustive search), export the winner
to the tuning cache."""

from __future__ import annotations

import argparse
import sys

from einsim.cli.output import add_wide_argument, print_json
from einsim.text import fit_text, render_table
from einsim.cli.problem_args import add_problem_arguments, kernel_problem_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "autotune", help="tune a kernel's config on the GPU, guided by the simulator (Optuna)",
        description="Run (or resume) an Optuna study over a kernel's configs: the default config and "
        "the simulator's best predictions first, then TPE. Every trial is saved in the storage as it "
        "finishes; rerunning the same command resumes. View with: optuna-dashboard <storage URL>.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--kernel", help="kernel name (einsim kernels list): attention-fwd, decode, ...; "
                       "with --all-shapes a comma-separated list (default attention-fwd,decode)")
    which.add_argument("--cascade", metavar="FILE.yaml",
                       help="a softmax-attention cascade (YAML file or library name): compile it and "
                       "tune its kernel (the tuning cache is keyed by the cascade's content)")
    parser.add_argument("--backward", action="store_true",
                        help="with --cascade: tune the compiled backward instead of the forward")
    parser.add_argument("--target", default="h100-sxm", help="GPU target the simulator models (default h100-sxm)")
    add_problem_arguments(parser)
    parser.add_argument("--trials", type=int, help="configs to run in the whole study (default: a quarter of "
                        "those that fit); a resumed study runs only the missing ones")
    parser.add_argument("--storage", help="Optuna storage: sqlite:///file.db (default sqlite:///einsim-tuning.db), "
                        "a file path, or postgresql+psycopg2://user:pass@host/db for many workers")
    parser.add_argument("--study", help="study name (default: kernel/target/shape[/dry-run][/exhaustive])")
    parser.add_argument("--dry-run", action="store_true", help="the simulator's prediction is the objective: no GPU")
    parser.add_argument("--exhaustive", action="store_true", help="run every config that fits (the baseline)")
    parser.add_argument("--seed", type=int, help="sampler seed (default: random; give one per worker if any)")
    parser.add_argument("--seeds", type=int, help="how many best-predicted configs to enqueue first")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--export", metavar="DIR", help="tuning-cache directory to write the best config to "
                        "(default $EINSIM_TUNED_DIR or ~/.cache/einsim/tuned)")
    parser.add_argument("--no-export", action="store_true", help="do not write the tuning cache")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_wide_argument(parser)
    fleet = parser.add_argument_group("a whole model (--model NAME --all-shapes)")
    fleet.add_argument("--all-shapes", action="store_true",
                       help="tune every shape the model's prefill and decode hit, one study per kernel and "
                       "tuning-cache bucket, most valuable first; resumable")
    fleet.add_argument("--prefill-lengths", default="1k,2k,4k,8k,16k,32k", help="prefill lengths (default 1k..32k)")
    fleet.add_argument("--decode-batches", default="1,2,4,8,16,32,64,128", help="decode batches (default 1..128)")
    fleet.add_argument("--decode-caches", default="4k,8k,16k,32k,64k,128k",
                       help="decode KV-cache lengths (default 4k..128k)")
    fleet.add_argument("--max-kv-gib", type=float, default=24.0,
                       help="skip decode shapes whose K+V cache times 3 exceeds this many GiB (default 24)")
    fleet.add_argument("--time-budget", type=float, help="seconds for the whole run: shapes not reached by then "
                       "are listed as such (rerun to continue)")
    fleet.add_argument("--workers", type=int, help="worker processes sharing the studies through --storage "
                       "(default: one per --gpus entry, else 1)")
    fleet.add_argument("--gpus", help="comma-separated GPU indices, one worker process each (CUDA_VISIBLE_DEVICES)")
    fleet.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set for spawned workers
    fleet.add_argument("--worker-count", type=int, help=argparse.SUPPRESS)  # how many were spawned
    fleet.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # shared by spawned workers
    parser.set_defaults(handler=run)


def config_text(config: dict) -> str:
    """{'BLOCK_M': 128, 'BLOCK_N': 64, 'num_warps': 8, 'num_stages': 3} -> 'M128 N64 w8 s3'."""
    short = {"BLOCK_M": "M", "BLOCK_N": "N", "num_warps": "w", "num_stages": "s", "NUM_SPLITS": "splits",
             "warp_specialize": "ws", "USE_TMA": "tma"}
    parts = []
    for name, value in config.items():
        if value is None or value is False:
            continue
        label = short.get(name, name)
        parts.append(label if value is True else f"{label}{value}")
    return " ".join(parts)


def _us(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.1f}"


def _dry(result) -> bool:
    """A dry run's objective is the simulator: nothing was measured."""
    return "dry-run" in result.mode


def summary_headers(result) -> list[str]:
    """The columns that mean something for this run: a dry run's only time is the simulator's (no
    'predicted' beside it, no predicted/measured ratio); 'vs exhaustive' only when an exhaustive
    study of the same problem is in the storage."""
    if _dry(result):
        headers = ["rank", "trial", "config", "simulated us", "vs default"]
    else:
        headers = ["rank", "trial", "config", "measured us", "predicted us", "predicted/measured", "vs default"]
    if result.exhaustive_best_s is not None:
        headers.append("vs exhaustive")
    return headers


def summary_rows(result, top: int = 5) -> list[list]:
    """The `top` configs, fastest first. Ties (equal to the 0.1 us shown) share their rank and stay
    in trial order (the default and the simulator's seeds come first)."""
    default = result.default
    done = sorted(result.completed, key=lambda t: (round(t.measured_s * 1e7), t.number))
    rows = []
    rank = 0
    for position, trial in enumerate(done[:top], start=1):
        if position == 1 or round(trial.measured_s * 1e7) != round(done[position - 2].measured_s * 1e7):
            rank = position
        row = [rank, trial.number, config_text(trial.config), _us(trial.measured_s)]
        if not _dry(result):
            ratio = trial.predicted_s / trial.measured_s if trial.predicted_s and trial.measured_s else None
            row += [_us(trial.predicted_s), "-" if ratio is None else f"{ratio:.2f}"]
        row.append("-" if default is None else f"{default.measured_s / trial.measured_s:.2f}x")
        if result.exhaustive_best_s is not None:
            row.append(f"{trial.measured_s / result.exhaustive_best_s:.3f}")
        rows.append(row)
    return rows


def print_summary(result, stream=None) -> None:
    stream = stream or sys.stdout
    what = "simulated by the GPU model, nothing run" if _dry(result) else f"measured on GPU {result.gpu}"
    print(fit_text(f"{result.kernel} on {result.problem.describe()}  [{result.mode}: {what}; target "
                   f"{result.target}]", "  "), file=stream)
    rows = summary_rows(result)
    print(render_table(summary_headers(result), rows, drop=["predicted us"]), file=stream)
    ranks = [row[0] for row in rows]
    if len(set(ranks)) < len(ranks):
        print("(equal times share a rank and are listed in trial order: the default first, then the "
              "simulator's picks)", file=stream)
    failures: dict[str, int] = {}
    for trial in result.failures:
        failures[trial.failure_kind or "other"] = failures.get(trial.failure_kind or "other", 0) + 1
    evaluated = len(result.evaluated)
    verb = "simulated" if _dry(result) else "run"
    print("\n" + fit_text(f"{evaluated} of {result.space_size} configs {verb} (budget {result.budget}; the simulator "
                         f"discarded {result.rejected} that cannot fit); {len(result.trials)} trials in study "
                         f"{result.study_name!r} at {result.storage}", "  "), file=stream)
    if failures:
        print("failed trials: " + ", ".join(f"{n} {kind}" for kind, n in sorted(failures.items())), file=stream)
    best, default = result.best, result.default
    if best is not None and default is not None:
        print(fit_text(f"best {_us(best.measured_s)} us vs default {config_text(default.config)} "
                       f"{_us(default.measured_s)} us{' (both simulated)' if _dry(result) else ''}: "
                       f"{default.measured_s / best.measured_s:.2f}x", "  "), file=stream)
    if best is not None and result.exhaustive_best_s is not None:
        print(f"exhaustive best {_us(result.exhaustive_best_s)} us: the tuned config is within "
              f"{100 * (best.measured_s / result.exhaustive_best_s - 1):.1f} %", file=stream)
    if result.retest:
        from einsim.autotune.timing import spread

        medians = {label: sorted(times)[len(times) // 2] for label, times in result.retest.items()}
        parts = [f"{label} {_us(medians[label])} us (spread {100 * spread(times):.1f} %)"
                 for label, times in result.retest.items()]
        rounds = max(len(t) for t in result.retest.values())
        line = f"retest, {rounds} interleaved rounds: " + ", ".join(parts)
        if "default" in medians:
            line += f"; best vs default {medians['default'] / medians['best']:.2f}x"
        print(line, file=stream)
    print(f"view: optuna-dashboard {result.storage}", file=stream)


def result_json(result) -> dict:
    from dataclasses import asdict

    best, default = result.best, result.default
    return {
        "kernel": result.kernel, "problem": asdict(result.problem), "target": result.target, "gpu": result.gpu,
        "study": result.study_name, "storage": result.storage, "mode": result.mode,
        "space_size": result.space_size, "rejected": result.rejected, "budget": result.budget,
        "evaluated": len(result.evaluated), "best": asdict(best) if best else None,
        "default": asdict(default) if default else None, "exhaustive_best_s": result.exhaustive_best_s,
        "trials": [asdict(t) for t in result.trials], "wall_s": result.wall_s,
        "retest": result.retest,
    }


def default_storage_file(storage: str | None):
    """The default SQLite file (einsim-tuning.db in the working directory) when no --storage is
    given and it does not exist yet: the run is about to create it. None otherwise."""
    from pathlib import Path

    from einsim.autotune.storage import DEFAULT_STORAGE

    if storage:
        return None
    path = Path(DEFAULT_STORAGE.removeprefix("sqlite:///")).absolute()
    return None if path.exists() else path


def announce_created(path) -> None:
    """Say where a file the user did not name was created (on stderr: stdout may be JSON)."""
    if path is not None and path.exists():
        print(f"einsim autotune: created {path} (the tuning studies' storage; --storage URL puts them "
              "elsewhere, rerunning here resumes them)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.all_shapes:
        from einsim.cli.autotune_fleet import run_fleet

        return run_fleet(args)
    from einsim.errors import ConfigError

    if not args.kernel and not args.cascade:
        raise ConfigError("autotune: name a kernel (--kernel NAME), a cascade (--cascade FILE.yaml), or a whole "
                          "model (--model NAME --all-shapes)")
    return run_one(args)


def run_one(args: argparse.Namespace) -> int:
    from einsim.kernels.tuned import export_best
    from einsim.autotune.study import TuningInterrupted, tune
    from einsim.errors import ConfigError
    from einsim.kernels.registry import get_kernel

    if args.cascade:
        from einsim.kernels.compiler import compile as compile_cascade
        from einsim.kernels.compiler.registry import kernel_stem

        args.kernel = kernel_stem(compile_cascade(args.cascade)) + ("-bwd" if args.backward else "-fwd")
    elif args.backward:
        raise ConfigError("--backward goes with --cascade; name a backward kernel with --kernel")
    get_kernel(args.kernel)  # unknown kernel: a clear error before anything else
    problem = kernel_problem_from_args(args, decode=args.kernel in ("decode", "decode-paged"))
    if args.trials is not None and args.trials <= 0:
        raise ConfigError(f"--trials must be a positive number, got {args.trials}")
    created = default_storage_file(args.storage)
    try:
        result = tune(args.kernel, problem, args.target, trials=args.trials, storage=args.storage,
                      study_name=args.study, dry_run=args.dry_run, exhaustive=args.exhaustive, seed=args.seed,
                      seeds=args.seeds, progress=not args.no_progress and not args.json, timeout_s=args.timeout)
    except TuningInterrupted as stop:
        print_summary(stop.result, stream=sys.stderr)
        print("interrupted: every finished trial is saved; rerun the same command to resume", file=sys.stderr)
        return 130
    announce_created(created)
    exported = None
    if result.best is not None and not args.dry_run and not args.no_export:
        best = result.best
        default = result.default
        exported = export_best(result.kernel, problem, result.gpu, best.config, measured_s=best.measured_s,
                               predicted_s=best.predicted_s, default_s=default.measured_s if default else None,
                               study=result.study_name, storage=result.storage, evaluations=len(result.evaluated),
                               directory=args.export)
    if args.json:
        data = result_json(result)
        data["exported"] = str(exported) if exported else None
        print_json(data)
    else:
        print_summary(result)
        if exported:
            print(f"tuning cache: {exported} (launchers read it for this shape bucket on this GPU)")
    return 0
