"""What one trial does with a config: run the real kernel on the GPU (compile, check against the
reference, time it on a warm GPU from CUDA-graph replays with a cold L2: autotune/timing.py), or,
for `--dry-run`, ask the simulator.

A config that fails to compile, runs out of resources or gives a wrong answer comes back as a
`Measurement` with `failure` set; it never raises, so the study goes on. torch and triton are
imported only by `GpuEvaluator`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from einsim.autotune import timing
from einsim.einsum_cascades.reference import attention_reference_torch
from einsim.problem import Problem
from einsim.kernels.registry import KernelSpec, get_kernel

# ‖out − ref‖ / ‖ref‖ a bf16/fp16 kernel must stay under (bf16 operands land between 1e-3 and
# 1e-2 against a float32 reference; a wrong mask or a missing tile lands far above).
RELATIVE_TOLERANCE = 2e-2
# CUDA errors after which the context is unusable: every later launch would fail too.
FATAL_CUDA_ERRORS = ("illegal memory access", "unspecified launch failure", "misaligned address",
                     "device-side assert", "illegal instruction", "an illegal", "CUDA error: unknown error")


@dataclass(frozen=True)
class Measurement:
    """One config's outcome: its time, or why it could not be timed."""

    time_s: float  # median kernel time (nan when failed)
    first_call_s: float = 0.0  # the first launch: compilation (or a cache load) plus one run
    bench_s: float = 0.0  # wall time of do_bench
    error: float = 0.0  # ‖out − ref‖ / ‖ref‖
    failure: str = ""  # empty when the config ran, was right and was timed
    failure_kind: str = ""  # compile | out_of_resources | wrong_output | runtime | fatal
    source: str = "gpu"  # gpu | simulator | replay
    timing: str = ""  # cuda-graph | eager (autotune/timing.py)

    @property
    def ok(self) -> bool:
        return not self.failure and math.isfinite(self.time_s)


class PredictionEvaluator:
    """The `--dry-run` objective: the simulator's predicted time, no GPU."""

    source = "simulator"
    gpu_name = None

    def __init__(self, space: Any) -> None:
        self._by_key = space.by_key()

    def __call__(self, config: Any) -> Measurement:
        from einsim.autotune.space import config_key

        found = self._by_key.get(config_key(config))
        if found is None:
            return Measurement(math.nan, failure="the simulator predicts this config does not fit",
                               failure_kind="out_of_resources", source=self.source)
        return Measurement(found[1].time_s, source=self.source)


class ReplayEvaluator:
    """Times measured earlier (config key -> seconds or a failure), replayed: used to run many
    sampler seeds against one exhaustive measurement (benchmarks/validate_autotune.py)."""

    source = "replay"

    def __init__(self, measured: dict[str, Measurement], gpu_name: str | None = None) -> None:
        self._measured = measured
        self.gpu_name = gpu_name

    def __call__(self, config: Any) -> Measurement:
        from einsim.autotune.space import config_key

        found = self._measured.get(config_key(config))
        if found is None:
            return Measurement(math.nan, failure="not measured in the replayed table", failure_kind="runtime",
                               source=self.source)
        return found


def _failure_kind(error: BaseException) -> str:
    name = type(error).__name__
    text = str(error)
    if name == "OutOfResources" or "out of resource" in text.lower():
        return "out_of_resources"
    if name in ("CompilationError", "CompileTimeAssertionFailure") or "compil" in name.lower():
        return "compile"
    if any(marker in text for marker in FATAL_CUDA_ERRORS):
        return "fatal"
    return "runtime"


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return (text[0] if text else type(error).__name__)[:limit]


# A first call longer than IDLE_S (a compile: seconds with the GPU idle, its clocks falling) is
# followed by REWARM_S of matmuls before the timing. Fleet W4 (H200): the default config, the
# first trial of a fresh process, measured 2.170 ms right after its compile and 1.903 ms in the
# interleaved retest; the 25 ms of the kernel's own warm-up did not bring the clocks back.
IDLE_S = 0.5
REWARM_S = 0.2


class GpuEvaluator:
    """Compile, check and time configs of one kernel on one problem on the current CUDA GPU."""

    source = "gpu"

    def __init__(self, kernel: str | KernelSpec, problem: Problem, *, seed: int = 0,
                 warmup_ms: float = 25.0, rep_ms: float = 100.0, tolerance: float = RELATIVE_TOLERANCE,
                 device: str = "cuda", graphs: bool = True) -> None:
        import importlib.util

        missing = [name for name in ("torch", "triton") if importlib.util.find_spec(name) is None]
        if missing:
            from einsim.errors import ConfigError

            raise ConfigError(f"timing kernels on the GPU needs {' and '.join(missing)}, which is not installed: "
                              f"`pip install 'einsim[kernels]'`, or add --dry-run to rank configs with the simulator")
        import torch

        if not torch.cuda.is_available():
            from einsim.errors import ConfigError

            raise ConfigError("no CUDA GPU here: tune on a GPU machine, or pass --dry-run to rank configs "
                              "with the simulator alone")
        self.spec = kernel if isinstance(kernel, KernelSpec) else get_kernel(kernel)
        self.problem = problem
        self.warmup_ms, self.rep_ms, self.tolerance = warmup_ms, rep_ms, tolerance
        self.graphs = graphs
        self.gpu_name = torch.cuda.get_device_name()
        self.inputs = self.spec.make_inputs(problem, problem.dtype, device, seed)
        # The oracle's formula in float32 on the GPU (einsum_cascades.reference).
        if self.spec.reference is not None:
            self.reference = self.spec.reference(self.inputs)
        else:
            self.reference = attention_reference_torch(self.inputs["q"], self.inputs["k"], self.inputs["v"],
                                                       causal=problem.causal, window=problem.window,
                                                       scale=self.inputs.get("scale"), dtype=torch.float32)
        torch.cuda.synchronize()
        # Every trial, the first included, is timed on a warm GPU (autotune/timing.py).
        timing.warm_up_gpu()

    def check(self, outputs: Any) -> tuple[float, str]:
        """(relative error of O, failure text or '')."""
        import torch

        if self.spec.reference is not None:
            return self._check_each(outputs)
        out = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        ref_out, ref_lse = self.reference
        if tuple(out.shape) != tuple(ref_out.shape):
            return math.inf, f"output shape {tuple(out.shape)}, expected {tuple(ref_out.shape)}"
        out = out.float()
        if not torch.isfinite(out).all():
            return math.inf, "output has NaN or Inf"
        error = (torch.linalg.vector_norm(out - ref_out) / torch.linalg.vector_norm(ref_out).clamp_min(1e-30)).item()
        if not error <= self.tolerance:
            return error, f"‖out − ref‖/‖ref‖ = {error:.3g} > {self.tolerance:g}"
        if isinstance(outputs, (tuple, list)) and len(outputs) > 1 and outputs[1] is not None:
            lse = outputs[1].float()
            if tuple(lse.shape) == tuple(ref_lse.shape):
                finite = torch.isfinite(ref_lse)
                if not torch.equal(torch.isfinite(lse), finite):
                    return error, "lse is finite where the reference's is -inf, or the other way round"
                if finite.any():
                    lse_error = (lse[finite] - ref_lse[finite]).abs().max().item()
                    if not lse_error <= 5e-2:
                        return error, f"max |lse − ref| = {lse_error:.3g} > 0.05"
        return error, ""

    def _check_each(self, outputs: Any) -> tuple[float, str]:
        """Every output the kernel's own reference gives (None where it gives none), each within
        the relative tolerance; the error reported is the largest."""
        import torch

        got = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
        want = tuple(self.reference) if isinstance(self.reference, (tuple, list)) else (self.reference,)
        worst = 0.0
        for index, expected in enumerate(want):
            if expected is None or index >= len(got) or got[index] is None:
                continue
            value = got[index]
            if tuple(value.shape) != tuple(expected.shape):
                return math.inf, f"output {index} has shape {tuple(value.shape)}, expected {tuple(expected.shape)}"
            value = value.float()
            if not torch.isfinite(value).all():
                return math.inf, f"output {index} has NaN or Inf"
            error = (torch.linalg.vector_norm(value - expected.float())
                     / torch.linalg.vector_norm(expected.float()).clamp_min(1e-30)).item()
            worst = max(worst, error)
            if not error <= self.tolerance:
                return error, f"output {index}: ‖out − ref‖/‖ref‖ = {error:.3g} > {self.tolerance:g}"
        return worst, ""

    def __call__(self, config: Any) -> Measurement:
        import torch

        started = time.perf_counter()
        try:
            outputs = self.spec.launch(config, self.inputs)
            torch.cuda.synchronize()
        except Exception as error:  # compile errors, out of resources, launch failures
            return Measurement(math.nan, first_call_s=time.perf_counter() - started,
                               failure=_first_line(error), failure_kind=_failure_kind(error))
        first_call_s = time.perf_counter() - started
        relative_error, failure = self.check(outputs)
        del outputs
        if failure:
            return Measurement(math.nan, first_call_s=first_call_s, error=relative_error, failure=failure,
                               failure_kind="wrong_output")
        if first_call_s > IDLE_S:  # the GPU idled while Triton compiled: clocks back up first
            timing.warm_up_gpu(REWARM_S, again=True)
        bench_started = time.perf_counter()
        try:
            seconds, method = timing.measure_s(lambda: self.spec.launch(config, self.inputs),
                                               graphs=self.graphs, warmup_ms=self.warmup_ms,
                                               rep_ms=self.rep_ms)
        except Exception as error:
            return Measurement(math.nan, first_call_s=first_call_s, error=relative_error,
                               failure=_first_line(error), failure_kind=_failure_kind(error))
        return Measurement(seconds, first_call_s=first_call_s,
                           bench_s=time.perf_counter() - bench_started, error=relative_error,
                           timing=method)

    def retest(self, configs: dict[str, Any], rounds: int = 3) -> dict[str, list[float]]:
        """Seconds of each labelled config, `rounds` times interleaved (the study summary's
        test-retest spread and its same-conditions best-vs-default ratio)."""
        return timing.retest_s({label: (lambda c=config: self.spec.launch(c, self.inputs))
                                for label, config in configs.items()}, rounds=rounds,
                               graphs=self.graphs)


Evaluator = Callable[[Any], Measurement]
