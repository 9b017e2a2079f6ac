"""Tuning at fleet scale: every attention shape a model's prefill and decode hit, one study per
(kernel, tuning-cache bucket), most valuable first, within a time budget, on any number of
worker processes (one per GPU) sharing the studies through Optuna's storage. docs/autotune.md
§ Tuning a whole model.

Optuna's storage is the distributed engine: workers walk the same ordered list of shapes and
call `tune()` on the same study names, so their trials of one study are deduplicated and counted
together (SQLite on one host, PostgreSQL across hosts); a rerun resumes every study where it
stopped. Exporting the winners is left to one process (the caller), after the workers finish.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from einsim.autotune.predict import predict_kernel
from einsim.autotune.result import TuningResult, load_result
from einsim.autotune.storage import open_storage
from einsim.autotune.study import FatalTuningError, TuningInterrupted, default_budget, tune
from einsim.errors import ConfigError
from einsim.kernels.registry import get_kernel
from einsim.kernels.tuned import shape_bucket
from einsim.problem import Problem

PREFILL_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
DECODE_CACHES = (4096, 8192, 16384, 32768, 65536, 131072)
PREFILL_KERNELS = ("attention-fwd", "attention-bwd")
DECODE_KERNELS = ("decode", "decode-paged")
DEFAULT_KERNELS = ("attention-fwd", "decode")
MAX_WORKERS = 64  # worker processes one command starts on its host (--workers)
MAX_KV_GIB = 24.0  # decode shapes whose K+V cache (plus the reference's fp32 copy) exceed this are skipped
MIN_SHAPE_S = 5.0  # do not start a shape with less time than this left
WORKER_GRACE_S = 5.0  # after an interrupt, how long workers get to stop on their own signal
WORKER_STOP_S = 10.0  # then, after our SIGTERM, how long they get to end their trial


@dataclass(frozen=True)
class FleetShape:
    """One (kernel, bucket) of a model: the problem that stands for it and what the default
    config of the kernel is predicted to cost per call (the priority)."""

    kernel: str
    problem: Problem
    phase: str  # prefill | decode
    bucket: str
    predicted_default_s: float

    @property
    def label(self) -> str:
        p = self.problem
        if self.phase == "decode":
            return f"{self.kernel}: decode B{p.batch} cache {p.kv_len}"
        return f"{self.kernel}: prefill B{p.batch} N{p.q_len}"


def model_shapes(model, kernels: Sequence[str] = DEFAULT_KERNELS, *,
                 prefill_lengths: Sequence[int] = PREFILL_LENGTHS,
                 decode_batches: Sequence[int] = DECODE_BATCHES,
                 decode_caches: Sequence[int] = DECODE_CACHES,
                 max_kv_gib: float = MAX_KV_GIB) -> tuple[list[tuple[str, Problem, str]], list[str]]:
    """((kernel, problem, phase) per distinct (kernel, tuning-cache bucket), skipped reasons).

    Prefill: batch 1 (the preset's), q = kv = N, the model's mask. Decode: one new token per
    sequence against a cache of each length, for each batch. Shapes are deduplicated by the
    bucket the tuning cache keys on (einsim.kernels.tuned.shape_bucket), so each study tunes
    what exactly one cache entry will serve."""
    for kernel in kernels:
        get_kernel(kernel)
        if kernel not in PREFILL_KERNELS + DECODE_KERNELS:
            raise ConfigError(f"--all-shapes tunes {', '.join(PREFILL_KERNELS + DECODE_KERNELS)}; "
                              f"got {kernel!r}")
    found, seen, skipped = [], set(), []
    for kernel in kernels:
        if kernel in PREFILL_KERNELS:
            problems = [(model.problem(n, mode="prefill"), "prefill") for n in prefill_lengths]
        else:
            problems = [(model.problem(n, mode="decode", batch=b), "decode")
                        for b in decode_batches for n in decode_caches]
        for problem, phase in problems:
            key = (kernel, shape_bucket(problem))
            if key in seen:
                continue
            seen.add(key)
            kv_gib = (problem.batch * problem.kv_heads * problem.kv_len
                      * (problem.head_dim + problem.v_head_dim) * problem.dtype_bytes) / 2**30
            if kv_gib * 3 > max_kv_gib:  # the cache, and the reference's fp32 copy of it
                skipped.append(f"{kernel} B{problem.batch} cache {problem.kv_len}: K+V {kv_gib:.1f} GiB "
                               f"(x3 with the reference's fp32 copy) > --max-kv-gib {max_kv_gib:g}")
                continue
            found.append((kernel, problem, phase))
    return found, skipped


def prioritise(shapes: Sequence[tuple[str, Problem, str]], target) -> list[FleetShape]:
    """Most valuable first: the simulator's predicted time of each kernel's default config for
    the shape, longest first (the most seconds per call to win back at a given relative gain;
    one prediction per shape, so ordering 60 shapes takes about a second)."""
    ordered = []
    for kernel, problem, phase in shapes:
        spec = get_kernel(kernel)
        predicted = predict_kernel(kernel, spec.default_config(problem), problem, target).time_s
        ordered.append(FleetShape(kernel, problem, phase, shape_bucket(problem),
                                  predicted if math.isfinite(predicted) else 0.0))
    return sorted(ordered, key=lambda s: (-s.predicted_default_s, s.kernel, s.bucket))


@dataclass
class FleetOutcome:
    shape: FleetShape
    status: str  # tuned | partial | interrupted | not reached [(why)] | failed: <reason>
    result: TuningResult | None = None


def run_shapes(shapes: Sequence[FleetShape], *, target, storage: str | None, trials: int | None,
               deadline: float, dry_run: bool = False, seed: int | None = None,
               evaluator_factory=None,
               report: Callable[[int, FleetOutcome], None] | None = None,
               worker: tuple[int, int] | None = None) -> list[FleetOutcome]:
    """Tune each shape in order until `deadline` (time.time()); each study resumes if the
    storage already has it. evaluator_factory(kernel, problem) -> evaluator (tests, replays).
    report(index, outcome) is called as each shape ends (a run cut short still said what it
    did). An interrupt (Ctrl-C, or SIGTERM under `interrupt_on_sigterm`) ends the run: the
    shape under way is 'interrupted' (its finished trials are in the storage), the rest 'not
    reached', and the outcomes so far are returned.

    worker=(index, count): one of `count` processes sharing the storage walks its own shapes
    first (every count-th, from its index: the `count` most valuable run at once), then the
    others', skipping a study another worker has finished (no second retest of it). Outcomes
    come back in the order of `shapes` whatever the walk."""
    order = worker_order(len(shapes), *(worker or (0, 1)))
    found: dict[int, FleetOutcome] = {}

    def done(index: int, outcome: FleetOutcome) -> None:
        found[index] = outcome
        if report is not None:
            report(index, outcome)

    def give_up(why: str) -> None:
        for index in order:
            if index not in found:
                done(index, FleetOutcome(shapes[index], f"not reached ({why}: rerun to resume)"))

    for index in order:
        shape = shapes[index]
        if _stop_requested:  # a SIGTERM whose KeyboardInterrupt Python swallowed (in a __del__)
            give_up("interrupted")
            break
        left = deadline - time.time()
        if left < MIN_SHAPE_S:
            done(index, FleetOutcome(shape, "not reached"))
            continue
        if worker is not None and worker[1] > 1 and index % worker[1] != worker[0]:
            finished = _finished_elsewhere(shape, target, storage, trials, dry_run)
            if finished is not None:
                done(index, FleetOutcome(shape, "tuned (by another worker)", finished))
                continue
        try:
            evaluator = evaluator_factory(shape.kernel, shape.problem) if evaluator_factory else None
            result = tune(shape.kernel, shape.problem, target, trials=trials, storage=storage,
                          dry_run=dry_run, seed=seed, timeout_s=left, evaluator=evaluator)
        except FatalTuningError as error:  # the GPU context is gone: nothing more runs here
            done(index, FleetOutcome(shape, f"failed: {error}"))
            give_up("GPU context lost")
            break
        except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: say what was done, stop
            done(index, FleetOutcome(shape, "interrupted",
                                     interrupt.result if isinstance(interrupt, TuningInterrupted) else None))
            give_up("interrupted")
            break
        except Exception as error:  # noqa: BLE001 - out of memory, a config error: next shape
            done(index, FleetOutcome(shape, f"failed: {type(error).__name__}: "
                                            f"{str(error).splitlines()[0][:200] if str(error) else ''}"))
            _free_gpu_memory()
            continue
        complete = len(result.evaluated) >= result.budget
        _keep_retest(result, storage)
        done(index, FleetOutcome(shape, "tuned" if complete else "partial", result))
    return [found[index] for index in range(len(shapes)) if index in found]


def _keep_retest(result: TuningResult, storage: str | None) -> None:
    """Store the worker's interleaved retest of best and default in the study (user attribute
    'retest'), so the process that collects and exports (another one, with --workers/--gpus)
    reports the same-conditions ratio, not the trials' own times (W4: a default timed right after
    its compile read 1.14x slower than the best; the retest said 1.00x)."""
    if not result.retest or storage == ":memory:":
        return
    import optuna

    try:
        study = optuna.load_study(study_name=result.study_name, storage=open_storage(storage))
        study.set_user_attr("retest", {label: list(times) for label, times in result.retest.items()})
    except Exception:  # noqa: BLE001 - the report falls back to the trials' own times
        return


def _stored_retest(result: TuningResult, storage: str | None) -> dict[str, list[float]]:
    import optuna

    try:
        study = optuna.load_study(study_name=result.study_name, storage=open_storage(storage))
    except Exception:  # noqa: BLE001
        return {}
    retest = study.user_attrs.get("retest")
    return {str(k): [float(t) for t in v] for k, v in retest.items()} if isinstance(retest, dict) else {}


def worker_order(count: int, index: int, workers: int) -> list[int]:
    """The order worker `index` of `workers` walks `count` shapes: its own (every workers-th,
    from index) first, then the rest, each part most valuable first."""
    own = list(range(index, count, workers))
    return own + [i for i in range(count) if i % workers != index]


def _finished_elsewhere(shape: FleetShape, target, storage, trials, dry_run) -> TuningResult | None:
    """The study of `shape` if another worker has run its whole budget, else None."""
    try:
        result = load_result(shape.kernel, shape.problem, target, storage=storage, dry_run=dry_run)
    except (ConfigError, KeyError, ValueError):
        return None
    result.budget = min(result.space_size, trials or default_budget(result.space_size))
    return result if result.best is not None and len(result.evaluated) >= result.budget else None


_stop_requested = False


def interrupt_on_sigterm() -> None:
    """Make SIGTERM (a job's `timeout`, a scheduler's stop) a KeyboardInterrupt in the main
    thread, so a fleet run cut short reports what it finished instead of dying silently
    (the W3 smoke run, killed at 12 s, printed nothing). The flag covers the interrupt Python
    drops when it lands in a finaliser: no new shape starts after it."""
    def handler(signum, frame):
        global _stop_requested
        _stop_requested = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def sigterm_handling():
    """The SIGTERM handler as it was before the block, whatever the block installed (a fleet run
    called in-process, as the tests do, leaves the caller's handler alone)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        global _stop_requested
        _stop_requested = False
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def finish_without_interrupts() -> None:
    """After the tuning: SIGTERM ignored while the (bounded) reading back, export and table run,
    so a stop that lands there does not lose the report of what was done."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _free_gpu_memory() -> None:
    """After a failed shape (often out of memory), give the cached blocks back."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def collect(shapes: Sequence[FleetShape], *, target, storage: str | None, trials: int | None = None,
            dry_run: bool = False) -> list[FleetOutcome]:
    """Every shape's study as the storage holds it (after workers finished); `trials` as the
    workers were given it, so 'tuned' means the same as in run_shapes."""
    outcomes = []
    for shape in shapes:
        try:
            result = load_result(shape.kernel, shape.problem, target, storage=storage,
                                 dry_run=dry_run)
        except ConfigError:
            outcomes.append(FleetOutcome(shape, "not reached"))
            continue
        result.budget = min(result.space_size, trials or default_budget(result.space_size))
        result.retest = _stored_retest(result, storage)
        if result.best is None:
            outcomes.append(FleetOutcome(shape, "not reached" if not result.trials else "failed: no config ran", result))
            continue
        status = "tuned" if len(result.evaluated) >= result.budget else "partial"
        outcomes.append(FleetOutcome(shape, status, result))
    return outcomes


def spawn_workers(argv: Sequence[str], count: int, gpus: Sequence[str] | None,
                  timeout_s: float) -> list[int]:
    """Start `count` worker processes running `einsim autotune <argv> --worker`, worker i on
    GPU gpus[i] (CUDA_VISIBLE_DEVICES), wait for all of them (killed after timeout_s), and
    return their exit codes."""
    processes = []
    try:
        for index in range(count):
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = str(gpus[index % len(gpus)])
            processes.append(subprocess.Popen([sys.executable, "-m", "einsim", "autotune", *argv,
                                               "--worker", str(index)], env=env))
        deadline = time.monotonic() + timeout_s
        codes = []
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
    except KeyboardInterrupt:  # stop the workers (each reports and ends its trial), then collect
        codes = _stop_workers(processes)
    finally:  # any other failure (or one while starting them): no worker outlives this command
        for process in processes:
            if process.poll() is None:
                process.kill()
                try:
                    process.wait(timeout=WORKER_STOP_S)  # reaped, not left a zombie
                except subprocess.TimeoutExpired:
                    pass
    return codes


def _stop_workers(processes) -> list[int]:
    """After an interrupt: a `timeout` signals the whole process group, so the workers may be
    stopping already: a short grace, then SIGTERM to the rest (a second one would kill a worker
    before it reports), then SIGKILL."""
    grace = time.monotonic() + WORKER_GRACE_S
    while time.monotonic() < grace and any(p.poll() is None for p in processes):
        time.sleep(0.1)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=WORKER_STOP_S))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes



__all__ = ["DECODE_BATCHES", "DECODE_CACHES", "FleetOutcome", "FleetShape", "PREFILL_LENGTHS",
           "collect", "finish_without_interrupts", "interrupt_on_sigterm", "model_shapes", "sigterm_handling", "prioritise", "run_shapes", "spawn_workers", "worker_order"]
