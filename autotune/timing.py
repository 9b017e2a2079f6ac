"""How a kernel is timed for tuning: the GPU warmed up first (clocks out of idle), then CUDA-graph
replays with the L2 flushed before every launch, so a config's time is its kernels' own time
from a cold cache, with no host launch cost and no first-trial penalty; eager
`triton.testing.do_bench` where a launch cannot be captured. Repeated, interleaved measurements
give the test-retest spread the study reports. Imports torch and triton when called.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

FLUSH_BYTES = 256 * 1024 * 1024  # larger than any L2 we tune on (H100 50 MiB, H200 60 MiB)
TARGET_REPLAY_S = 0.02  # launches per graph chosen so one replay takes about this long
MAX_LAUNCHES = 64
_warmed: set[int] = set()


def warm_up_gpu(seconds: float = 0.3, device: int | None = None, *, again: bool = False) -> None:
    """Run dense matmuls for `seconds` once per process and device (again=True: whenever
    called), so the first config is not timed at idle clocks (the cold first trial issue 12
    measured: 1.76x 'over the default')."""
    import torch

    index = torch.cuda.current_device() if device is None else device
    if index in _warmed and not again:
        return
    a = torch.randn(4096, 4096, device=f"cuda:{index}", dtype=torch.bfloat16)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(8):
            a @ a
        torch.cuda.synchronize(index)
    _warmed.add(index)


def _flush_buffer():
    import torch

    return torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")


def _capture(body: Callable[[], None]):
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        body()  # warm-up on the capture stream (allocator pools, lazy module loads)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph


def _replay_s(graph) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3


def graph_time_s(fn: Callable[[], object], *, replays: int = 7) -> float:
    """Median seconds of one `fn()` from CUDA-graph replays, L2 flushed before each launch: a
    graph of (flush, fn) x n and one of flush x n, replayed alternately; the difference of each
    pair divided by n. Raises if `fn` cannot be captured."""
    import torch

    flush = _flush_buffer()
    fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    once = max(time.perf_counter() - started, 1e-6)
    launches = max(1, min(MAX_LAUNCHES, int(TARGET_REPLAY_S / once)))

    def pairs():
        for _ in range(launches):
            flush.zero_()
            fn()

    def flushes():
        for _ in range(launches):
            flush.zero_()

    with_kernel, flush_only = _capture(pairs), _capture(flushes)
    _replay_s(with_kernel), _replay_s(flush_only)
    differences = [(_replay_s(with_kernel) - _replay_s(flush_only)) / launches
                   for _ in range(replays)]
    del with_kernel, flush_only, flush
    return max(statistics.median(differences), 0.0)


def eager_time_s(fn: Callable[[], object], *, warmup_ms: float = 25.0, rep_ms: float = 100.0) -> float:
    """Median seconds of `fn()` by triton.testing.do_bench (L2 flushed before each call)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median") * 1e-3


def measure_s(fn: Callable[[], object], *, graphs: bool = True, warmup_ms: float = 25.0,
              rep_ms: float = 100.0) -> tuple[float, str]:
    """(seconds, "cuda-graph" | "eager"): graph timing where the launch can be captured."""
    if graphs:
        try:
            return graph_time_s(fn), "cuda-graph"
        except Exception:  # noqa: BLE001 - not capturable (host sync, allocation): eager below
            import torch

            torch.cuda.synchronize()
    return eager_time_s(fn, warmup_ms=warmup_ms, rep_ms=rep_ms), "eager"


def retest_s(fns: dict[str, Callable[[], object]], *, rounds: int = 3,
             graphs: bool = True) -> dict[str, list[float]]:
    """Each callable timed `rounds` times, interleaved (round 1 of every callable, then round
    2, ...), so clock drift affects all alike: the test-retest spread of a tuning result."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(measure_s(fn, graphs=graphs)[0])
    return times


def spread(times: list[float]) -> float:
    """(max - min) / median of repeated times (0 for one time)."""
    if len(times) < 2:
        return 0.0
    middle = statistics.median(times)
    return (max(times) - min(times)) / middle if middle > 0 else 0.0
