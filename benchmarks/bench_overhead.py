"""Host wall time per call: einsim's kernels against torch SDPA (cuDNN and flash backends) in
the same run, at tiny shapes where the GPU work is a few microseconds and the host is what a
user waits for (attention is called thousands of times per step).

    python benchmarks/bench_overhead.py [--csv overhead.csv] [--calls 2000]
    TRITON_INTERPRET=1 python benchmarks/bench_overhead.py --stub   # CPU: the Python path only

GPU: each backend is called `--calls` times back to back (outputs checked first, against the
fp32 torch twin of the oracle), the loop's wall time divided by the calls, median of 5 loops;
the GPU work is far shorter than the host's, so this is the host time per call. Rows: forward
(B1 H1 N128 D64, as the 2026-11-29 anchors), forward+backward (torch.autograd.grad of the same),
decode (B1 Hq32 Hkv8, 4k cache, D128; einsim's split-KV and its serving decode over a paged
copy of the same cache, page 16), and einsim through its operator
(torch.ops.einsim.*, the dispatcher hop torch.compile sees), and the forward with pointer loads
instead of tensor descriptors (einsim_noTMA: Triton converts descriptors in Python on every
launch). `--stub` (CPU, interpreter): every
Triton launch replaced by a no-op, so the rows time what einsim's Python does per call (plan
lookup, allocations, autograd) on this machine; SDPA's rows there run its CPU math.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from einsim.einsum_cascades.reference import attention_reference_torch  # noqa: E402
from einsim.kernels import attention, launch, ops  # noqa: E402
from einsim.kernels.decode.config import make_paged_inputs  # noqa: E402
from einsim.kernels.decode.forward import decode_attention, decode_paged  # noqa: E402
from einsim.problem import Problem  # noqa: E402

FORWARD_SHAPE = (1, 1, 1, 128, 128, 64)  # batch, q heads, kv heads, q len, kv len, head dim
DECODE_SHAPE = (1, 32, 8, 1, 4096, 128)


def sdpa_backends():
    from torch.nn.attention import SDPBackend

    return {"sdpa_cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa_flash": SDPBackend.FLASH_ATTENTION}


def wall_us_per_call(fn, calls: int, device: str, loops: int = 5) -> float:
    """Median over `loops` of (wall time of `calls` back-to-back calls) / calls, in us."""
    for _ in range(20):
        fn()
    synchronize(device)
    times = []
    for _ in range(loops):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(times)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def tensors(shape, device, dtype, requires_grad=False, seed=0):
    batch, hq, hkv, nq, nk, d = shape
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*size):
        t = torch.randn(*size, generator=generator).to(device=device, dtype=dtype)
        return t.requires_grad_(requires_grad)
    return randn(batch, hq, nq, d), randn(batch, hkv, nk, d), randn(batch, hkv, nk, d)


def check(name, out, q, k, v, failures) -> None:
    ref, _ = attention_reference_torch(q.detach(), k.detach(), v.detach(), dtype=torch.float32)
    error = (out.float() - ref).abs().max().item()
    if not error <= 3e-2:
        failures.append(f"{name}: max error {error:.3g}")


def cases(device: str, dtype, stub: bool):
    """(row, backend, callable) for every measurement."""
    failures: list[str] = []
    q, k, v = tensors(FORWARD_SHAPE, device, dtype)
    qg, kg, vg = tensors(FORWARD_SHAPE, device, dtype, requires_grad=True)
    do = torch.randn_like(q)
    dq, dkv = tensors(DECODE_SHAPE, device, dtype)[0], tensors(DECODE_SHAPE, device, dtype)[1:]
    gqa = DECODE_SHAPE[1] != DECODE_SHAPE[2]
    served = make_paged_inputs(Problem(batch=1, q_heads=DECODE_SHAPE[1], kv_heads=DECODE_SHAPE[2],
                                       q_len=1, kv_len=DECODE_SHAPE[4], head_dim=DECODE_SHAPE[5],
                                       dtype="bf16" if dtype == torch.bfloat16 else "fp16"),
                               device=device, dense={"q": dq, "k": dkv[0], "v": dkv[1]})
    paged = (served["k_cache"], served["v_cache"], served["cache_seqlens"], served["block_table"])

    def fwd_bwd(run):
        def call():
            out = run(qg, kg, vg)
            return torch.autograd.grad(out, (qg, kg, vg), do)
        return call

    from dataclasses import replace

    from einsim.kernels.flash.backward import flash_backward
    from einsim.kernels.flash.config import backward_default_config, default_config
    from einsim.kernels.runtime import check_attention_inputs

    problem = check_attention_inputs(q, k, v, kernel="attention-fwd")
    pointers = replace(default_config(problem), tma=False)
    backward_pointers = replace(backward_default_config(problem), tma=False)
    out, lse = attention(q, k, v, return_lse=True)
    rows = []  # peers first: a run killed at its limit still has them
    if device == "cuda":
        from torch.nn.attention import sdpa_kernel

        for name, backend in sdpa_backends().items():
            def sdpa(a, b, c, backend=backend, enable_gqa=False):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(a, b, c, enable_gqa=enable_gqa)
            rows += [("forward", name, lambda s=sdpa: s(q, k, v)),
                     ("forward+backward", name, fwd_bwd(sdpa)),
                     ("decode", name, lambda s=sdpa: s(dq, *dkv, enable_gqa=gqa))]
    else:
        rows += [("forward", "sdpa_cpu", lambda: F.scaled_dot_product_attention(q, k, v)),
                 ("forward+backward", "sdpa_cpu", fwd_bwd(F.scaled_dot_product_attention)),
                 ("decode", "sdpa_cpu",
                  lambda: F.scaled_dot_product_attention(dq, *dkv, enable_gqa=gqa))]
    rows += [  # in the order of what matters most, if the run is cut short
        ("forward", "einsim", lambda: attention(q, k, v)),
        ("forward+backward", "einsim", fwd_bwd(attention)),
        ("decode", "einsim", lambda: decode_attention(dq, *dkv)),
        ("decode", "einsim_op", lambda: ops.decode(dq, *dkv)),
        ("forward", "einsim_op", lambda: ops.attention_forward(q, k, v)),
        ("decode", "einsim_paged", lambda: decode_paged(dq, *paged)),
        # where forward+backward's time goes: autograd alone, the same with a Python
        # autograd.Function (what any Triton kernel's backward runs in), our forward under
        # autograd, our backward called directly
        ("autograd only", "torch", lambda: torch.autograd.grad(qg * 1.0, (qg,), do)),
        ("autograd, Python Fn", "torch", lambda: torch.autograd.grad(Scale.apply(qg), (qg,), do)),
        ("forward, grad on", "einsim", lambda: attention(qg, kg, vg)),
        ("backward direct", "einsim", lambda: flash_backward(do, q, k, v, out, lse)),
        ("forward", "einsim_noTMA", lambda: attention(q, k, v, config=pointers)),
        ("backward direct", "einsim_noTMA",
         lambda: flash_backward(do, q, k, v, out, lse, config=backward_pointers)),
        ("forward+backward", "einsim_noTMA", fwd_bwd(
            lambda a, b, c: attention(a, b, c, config=pointers, backward_config=backward_pointers))),
    ]
    if not stub:
        check("forward", attention(q, k, v), q, k, v, failures)
        check("decode", decode_attention(dq, *dkv)[0], dq, *dkv, failures)
        check_gradients(qg, kg, vg, do, failures)
    return rows, failures


def check_gradients(q, k, v, do, failures) -> None:
    """einsim's gradients (the host-bound one-launch backward at this size) against autograd
    through the fp32 torch twin of the oracle."""
    grads = torch.autograd.grad(attention(q, k, v), (q, k, v), do)
    ref_inputs = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
    ref, _ = attention_reference_torch(*ref_inputs, dtype=torch.float32)
    for name, got, want in zip(("dq", "dk", "dv"), grads, torch.autograd.grad(ref, ref_inputs, do.float())):
        error = (got.float() - want).abs().max().item() / max(want.abs().max().item(), 1e-6)
        if not error <= 3e-2:
            failures.append(f"forward+backward {name}: relative error {error:.3g}")


class Scale(torch.autograd.Function):
    """x * 1.0 with its backward in Python: the autograd engine's cost of a Python backward."""

    @staticmethod
    def forward(ctx, x):
        return x * 1.0

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.0


def stub_launches() -> None:
    """Replace every Triton launch by a no-op: what remains is einsim's Python per call."""
    launch.TritonLaunch.__call__ = lambda self, *tensors: None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed loop")
    parser.add_argument("--csv", help="write the rows here (default $OUT/overhead.csv if OUT is set)")
    parser.add_argument("--stub", action="store_true",
                        help="CPU: launches are no-ops (needs TRITON_INTERPRET=1)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.stub else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        print("bench_overhead: no GPU; run with TRITON_INTERPRET=1 --stub to time the Python path",
              file=sys.stderr)
        return 2
    if args.stub:
        stub_launches()
    dtype = torch.bfloat16 if device == "cuda" else torch.float16
    if device == "cuda":
        from einsim.autotune.timing import warm_up_gpu

        warm_up_gpu(0.5)
    rows, failures = cases(device, dtype, args.stub)
    for failure in failures:
        print(f"WRONG {failure}")
    results = []
    for row, backend, fn in rows:
        try:
            us = wall_us_per_call(fn, args.calls, device)
        except Exception as error:  # a backend that cannot run this shape: say so, go on
            print(f"  {row}/{backend} skipped: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
            continue
        print(f"  {row:20s}{backend:12s}{us:8.1f} us", flush=True)  # seen even if killed later
        results.append((row, backend, us))
    direct = [plan.launch.fast for cache in launch.PLAN_CACHES.values()
              for plan in cache._plans.values() if getattr(plan, "launch", None) is not None]
    best_sdpa = {}
    for row, backend, us in results:
        if backend.startswith("sdpa"):
            best_sdpa[row] = min(us, best_sdpa.get(row, float("inf")))
    header = ("case", "backend", "us_per_call", "vs_best_sdpa", "device", "mode")
    mode = "stub launches" if args.stub else "real launches"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    table = [(row, backend, f"{us:.1f}",
              f"{us / best_sdpa[row]:.2f}" if row in best_sdpa else "-", name, mode)
             for row, backend, us in results]
    path = args.csv or (os.path.join(os.environ["OUT"], "overhead.csv") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(table)
    print(f"host wall time per call, {mode}, {name}, torch {torch.__version__}; direct launches: "
          f"{sum(direct)} of {len(direct)} plans")
    widths = [20, 14, 12, 13]
    print("".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in table:
        print("".join(str(x).ljust(w) for x, w in zip(line, widths)))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
