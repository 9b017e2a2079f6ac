"""The linear-attention kernels (`linear-fwd`, `linear-bwd`, `linear-decode`) against what users
would pick instead, timed in the same run on the GPU: flash-linear-attention's chunk kernels
(`chunk_linear_attn` without decay; `chunk_simple_gla` with a per-head decay g_gamma and
`chunk_retention` where they run) and softmax attention of the same shape (einsim's fused kernel,
causal). Correctness first, at real sizes: every kernel of ours against the oracle's formula in
fp32 on the GPU (linear_attention_reference_torch, on a slice of heads where the quadratic
reference fits), and against fla where fla runs; then forward and backward medians by
triton.testing.do_bench, host wall time per call on a tiny shape, and a decode step.

    python benchmarks/bench_linear.py                       # bf16, 64k tokens per call, 16 heads, D=128
    python benchmarks/bench_linear.py --lengths 2048,65536 --budget-s 120
    python benchmarks/bench_linear.py --sweep               # time candidate configs too, print the best
    python benchmarks/bench_linear.py --csv out.csv         # default $JOB_OUT or $OUT /linear.csv

Shapes: batch x N = TOKENS (64k), H = 16, D = Dv = 128, N = 2k..64k (issue 14). TFLOP/s use the
matmul FLOPs each algorithm needs: the chunked algorithm's (kernels.linear.config.forward_flops,
chunk 64) for every linear backend alike, visible pairs for softmax. Ratios are peer_ms / our_ms.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import triton  # noqa: E402

from einsim.einsum_cascades.reference import linear_attention_reference_torch  # noqa: E402
from einsim.kernels import attention  # noqa: E402
from einsim.kernels.flash.forward import flash_forward  # noqa: E402
from einsim.kernels.launch import LAST_LAUNCH  # noqa: E402
from einsim.kernels.linear.chunk import linear_attention, linear_forward  # noqa: E402
from einsim.kernels.linear.config import (LinearBackwardConfig, LinearConfig, backward_default_config,  # noqa: E402
                                          backward_flops, default_config, forward_flops, lightning_slopes)
from einsim.kernels.linear.decode import linear_attention_decode  # noqa: E402
from einsim.kernels.registry import KERNELS  # noqa: E402
from einsim.kernels.runtime import device_limits  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.shapes import parse_lengths  # noqa: E402

TOKENS = 65536
HEADS = 16
HEAD_DIM = 128
LENGTHS = (2048, 4096, 8192, 16384, 32768, 65536)
# Quadratic fp32 reference on this many heads of batch 0 (its scores are N x N per head).
CHECK_HEADS = 2
CHECK_MAX_LENGTH = 16384
SWEEP_REP_MS = 40  # a sweep times many configs: shorter runs (medians of ~40 ms of calls)
TOLERANCE = 2e-2  # ‖out − ref‖ / ‖ref‖ for bf16 operands with fp32 accumulation
DEADLINE = [float("inf")]
STARTED = time.time()
DEVICE = ["cuda"]  # --device cpu: a smoke run in Triton's interpreter (TRITON_INTERPRET=1), tiny shapes


def elapsed() -> float:
    return time.time() - STARTED


def synchronize() -> None:
    if DEVICE[0] == "cuda":
        torch.cuda.synchronize()


def empty_cache() -> None:
    if DEVICE[0] == "cuda":
        torch.cuda.empty_cache()


def out_dir() -> Path | None:
    for name in ("JOB_OUT", "OUT"):
        if os.environ.get(name):
            return Path(os.environ[name])
    return None


def time_ms(fn: Callable[[], object], rep: int = 100) -> float:
    """Median ms of fn over about `rep` ms of calls (after a warm-up)."""
    if DEVICE[0] != "cuda":  # the interpreter: one call, for a smoke run only
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1e3
    return triton.testing.do_bench(fn, warmup=max(5, rep // 4), rep=rep, return_mode="median")


def relative_error(got, want) -> float:
    got, want = got.float(), want.float()
    return (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want).clamp_min(1e-30)).item()


class Case:
    """One shape's tensors in both layouts: ours [B, H, N, D], fla's [B, N, H, D] (each library
    timed in its native layout; the same numbers)."""

    def __init__(self, length: int, seed: int = 0):
        self.length = length
        self.batch = max(1, TOKENS // length)
        self.problem = Problem(batch=self.batch, q_heads=HEADS, kv_heads=HEADS, q_len=length,
                                        kv_len=length, head_dim=HEAD_DIM, causal=True, dtype="bf16")
        generator = torch.Generator(device=DEVICE[0]).manual_seed(seed)
        shape = (self.batch, HEADS, length, HEAD_DIM)
        self.q, self.k, self.v, self.do = (
            torch.randn(shape, device=DEVICE[0], dtype=torch.bfloat16, generator=generator) for _ in range(4))
        self.fla = tuple(t.transpose(1, 2).contiguous() for t in (self.q, self.k, self.v, self.do))
        self.slope = torch.tensor(lightning_slopes(HEADS), dtype=torch.float32, device=DEVICE[0])
        # RetNet's fixed decays (fla's chunk_retention): g = 1 - 2^(-5 - h)
        self.retention_slope = -torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(HEADS, device=DEVICE[0],
                                                                              dtype=torch.float32)))

    def leaves(self, fla: bool = False):
        tensors = self.fla[:3] if fla else (self.q, self.k, self.v)
        return tuple(t.detach().clone().requires_grad_(True) for t in tensors)


def backward_timer(forward: Callable, case: Case, fla: bool = False) -> Callable[[], object]:
    """Time only the backward: the forward runs once, its graph is kept and replayed."""
    leaves = case.leaves(fla)
    out = forward(*leaves)
    grad = case.fla[3] if fla else case.do
    return lambda: torch.autograd.grad(out, leaves, grad, retain_graph=True)


# -- fla (flash-linear-attention), imported lazily: it may be missing or refuse to run ------------
def _fla(module: str, name: str):
    imported = __import__(module, fromlist=[name])
    return getattr(imported, name)


def _call(fn, q, k, v, **options):
    params = inspect.signature(fn).parameters
    if "head_first" in params:
        options["head_first"] = False
    if "normalize" in params:
        options["normalize"] = False
    out = fn(q, k, v, **{key: value for key, value in options.items() if key in params})
    return out[0] if isinstance(out, tuple) else out


def fla_linear(q, k, v):
    return _call(_fla("fla.ops.linear_attn", "chunk_linear_attn"), q, k, v, scale=HEAD_DIM ** -0.5)


def fla_simple_gla(slope):
    def run(q, k, v):
        fn = _fla("fla.ops.simple_gla", "chunk_simple_gla")
        if "g_gamma" in inspect.signature(fn).parameters:
            return _call(fn, q, k, v, g_gamma=-slope, scale=HEAD_DIM ** -0.5)
        g = (-slope).expand(q.shape[0], q.shape[1], q.shape[2]).contiguous()
        return _call(fn, q, k, v, g=g, scale=HEAD_DIM ** -0.5)
    return run


def fla_retention(q, k, v):
    return _call(_fla("fla.ops.retention", "chunk_retention"), q, k, v, scale=HEAD_DIM ** -0.5)


def to_ours(out_fla):
    return out_fla.transpose(1, 2)


# -- the variants ---------------------------------------------------------------------------------------
def ours(decay: str | None, config=None, backward_config=None):
    def slope_of(case):
        return {None: None, "lightning": case.slope, "retention": case.retention_slope}[decay]

    def forward(case):
        slope = slope_of(case)
        return lambda: linear_forward(case.q, case.k, case.v, decay=slope, config=config)

    def backward(case):
        slope = slope_of(case)
        return backward_timer(lambda q, k, v: linear_attention(q, k, v, decay=slope, config=config,
                                                               backward_config=backward_config)[0], case)
    return forward, backward


def fla_variant(fn_of_case):
    def forward(case):
        fn = fn_of_case(case)
        q, k, v, _ = case.fla
        return lambda: fn(q, k, v)

    def backward(case):
        return backward_timer(fn_of_case(case), case, fla=True)
    return forward, backward


def softmax_forward(case):
    return lambda: flash_forward(case.q, case.k, case.v, causal=True)


def softmax_backward(case):
    return backward_timer(lambda q, k, v: attention(q, k, v, causal=True), case)


VARIANTS = {
    # name: (algorithm, decay, (forward builder, backward builder)); ours first (fla compares
    # its forward output with ours of the same decay)
    "einsim-linear": ("linear", "none", ours(None)),
    "einsim-linear-decay": ("linear", "lightning", ours("lightning")),
    "einsim-softmax": ("softmax", "causal", (softmax_forward, softmax_backward)),
    "fla-chunk_linear_attn": ("linear", "none", fla_variant(lambda case: fla_linear)),
    "fla-chunk_simple_gla": ("linear", "lightning", fla_variant(lambda case: fla_simple_gla(case.slope))),
    "einsim-linear-retention": ("linear", "retention", ours("retention")),
    "fla-chunk_retention": ("linear", "retention", fla_variant(lambda case: fla_retention)),
}
OURS_FOR = {"none": "einsim-linear", "lightning": "einsim-linear-decay", "retention": "einsim-linear-retention",
            "steep": "einsim-linear-steep"}


# -- correctness ----------------------------------------------------------------------------------------
def check_case(case: Case, rows: list[dict], decays: tuple[str, ...]) -> None:
    """Ours against the fp32 oracle on a slice of heads (N <= CHECK_MAX_LENGTH): output, final
    state and gradients. fla is compared with ours where it is timed (time_case)."""
    if case.length > CHECK_MAX_LENGTH:
        return
    heads = slice(0, CHECK_HEADS)
    for decay in decays:
        if time.time() > DEADLINE[0]:
            return
        slope = slope_for(case, decay)
        base = {"kind": "check", "decay": decay, "N": case.length, "backend": OURS_FOR[decay]}
        try:
            q, k, v, do = (t[:1, heads] for t in (case.q, case.k, case.v, case.do))
            part = None if slope is None else slope[heads].contiguous()
            leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
            mine, final = linear_attention(*leaves, decay=part, output_final_state=True)
            ref_leaves = [t.detach().float().requires_grad_(True) for t in (q, k, v)]
            want, want_state = linear_attention_reference_torch(*ref_leaves, feature_map=None,
                                                                scale=HEAD_DIM ** -0.5, decay=part,
                                                                dtype=torch.float32)
            got = torch.autograd.grad(mine, leaves, do)
            expected = torch.autograd.grad(want, ref_leaves, do.float())
            errors = {"forward": relative_error(mine, want), "final_state": relative_error(final, want_state),
                      "backward": max(relative_error(g, e) for g, e in zip(got, expected))}
            found = [{**base, "what": what, "error": error, "ok": bool(error <= TOLERANCE)}
                     for what, error in errors.items()]
        except Exception as error:  # out of memory, a compile failure: recorded, not fatal
            found = [{**base, "what": "all", "ok": False,
                      "failure": f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"}]
        for row in found:
            rows.append(row)
            print(f"  check {row['what']:12s} {row['backend']:26s} N={case.length:6d} "
                  f"error={row.get('error', float('nan')):.2e} {'ok' if row['ok'] else 'FAIL ' + row.get('failure', '')}"
                  f"  [t={elapsed():.0f}s]", flush=True)
        empty_cache()


def slope_for(case: Case, decay: str):
    """The per-head slopes of a decay name. "steep" (checks only): 6 and 2 per token, so fast that
    g^j leaves fp32's range within a chunk and the walk takes its element-by-element loop."""
    if decay == "steep":
        return torch.tensor([6.0, 2.0] * (HEADS // 2) + [6.0] * (HEADS % 2), device=DEVICE[0])
    return {"none": None, "causal": None, "lightning": case.slope, "retention": case.retention_slope}[decay]


def check_decode(rows: list[dict]) -> None:
    """The decode step at real size after a chunked prefill, against the oracle's state and output."""
    from einsim.kernels.linear.naive import recurrent_linear_attention

    batch, length = 8, 1023
    generator = torch.Generator(device=DEVICE[0]).manual_seed(5)
    q, k, v = (torch.randn(batch, HEADS, length + 1, HEAD_DIM, device=DEVICE[0], dtype=torch.bfloat16,
                           generator=generator) for _ in range(3))
    slope = torch.tensor(lightning_slopes(HEADS), device=DEVICE[0])
    row = {"kind": "check", "what": "decode", "decay": "lightning", "N": length + 1, "backend": "einsim-linear-decode"}
    try:
        _, state = linear_attention(q[:, :, :length], k[:, :, :length], v[:, :, :length], decay=slope,
                                    output_final_state=True)
        want_state = recurrent_linear_attention(q[:, :, :length], k[:, :, :length], v[:, :, :length],
                                                decay=slope)[1]
        state_error = relative_error(state, want_state)
        out = linear_attention_decode(q[:, :, length:], k[:, :, length:], v[:, :, length:], state, decay=slope)
        want, want_state = recurrent_linear_attention(q[:, :, length:], k[:, :, length:], v[:, :, length:],
                                                      decay=slope, initial_state=want_state)
        row["error"] = max(state_error, relative_error(out, want), relative_error(state, want_state))
        row["ok"] = bool(row["error"] <= TOLERANCE)
    except Exception as error:
        row["ok"], row["failure"] = False, f"{type(error).__name__}: {error}"[:200]
    rows.append(row)
    print(f"  check decode after a {length}-token prefill: error={row.get('error', float('nan')):.2e} "
          f"{'ok' if row.get('ok') else 'FAIL ' + row.get('failure', '')}", flush=True)


# -- timing ------------------------------------------------------------------------------------------------
def time_case(case: Case, rows: list[dict], names: list[str], skip: set = frozenset()) -> None:
    ours_outputs: dict[str, torch.Tensor] = {}
    for direction, index in (("fwd", 0), ("bwd", 1)):
        for name in names:
            if time.time() > DEADLINE[0]:
                return
            if (direction, name) in skip:
                continue
            algorithm, decay, builders = VARIANTS[name]
            row = {"kind": direction, "backend": name, "algorithm": algorithm, "decay": decay,
                   "N": case.length, "B": case.batch, "H": HEADS, "D": HEAD_DIM}
            try:
                fn = builders[index](case)
                result = fn()
                synchronize()
                if direction == "fwd" and algorithm == "linear":
                    output = result[0] if isinstance(result, tuple) else result
                    if name.startswith("einsim"):
                        ours_outputs[decay] = output
                    elif decay in ours_outputs:  # fla's [B, N, H, D] against ours [B, H, N, D]
                        row["error_vs_ours"] = relative_error(to_ours(output), ours_outputs[decay])
                del result
                row["ms"] = time_ms(fn)
                if algorithm == "linear":
                    work = forward_flops(case.problem) if direction == "fwd" else backward_flops(case.problem)
                else:
                    work = (case.problem.forward_flops() if direction == "fwd" else case.problem.backward_flops())
                row["tflops"] = work / (row["ms"] * 1e-3) / 1e12
                if name.startswith("einsim-linear") and "_chunk_walk" in LAST_LAUNCH:
                    row.update({f"walk_{key}": value for key, value in LAST_LAUNCH["_chunk_walk"].items()})
                if name.startswith("einsim-linear"):  # the config the call resolved (default or tuned)
                    kernel = "linear-fwd" if direction == "fwd" else "linear-bwd"
                    row["config"] = repr(KERNELS[kernel].resolve_config(None, case.problem, device_limits(case.q.device)))
            except Exception as error:
                row["failure"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
            rows.append(row)
            shown = f"{row['ms']:8.3f} ms {row['tflops']:6.1f} TFLOP/s" if "ms" in row else "FAILED " + row["failure"]
            if "error_vs_ours" in row:
                shown += f"  ‖fla − ours‖/‖ours‖ = {row['error_vs_ours']:.2e}"
            print(f"  {direction} {name:26s} N={case.length:6d} B={case.batch:3d} {shown}  [t={elapsed():.0f}s]",
                  flush=True)
            empty_cache()


def time_host(rows: list[dict]) -> None:
    """Wall time per call on a tiny shape (B=1, H=1, N=64, D=64): launch overhead, what users pay
    thousands of times per step; the same loop for fla."""
    tiny = [torch.randn(1, 1, 64, 64, device=DEVICE[0], dtype=torch.bfloat16) for _ in range(3)]
    tiny_fla = [t.transpose(1, 2).contiguous() for t in tiny]
    calls = {
        "einsim-linear": lambda: linear_forward(*tiny),
        "fla-chunk_linear_attn": lambda: fla_linear(*tiny_fla),
        "einsim-softmax": lambda: flash_forward(*tiny, causal=True),
    }
    for name, fn in calls.items():
        row = {"kind": "host", "backend": name, "N": 64, "B": 1, "H": 1, "D": 64}
        try:
            for _ in range(20):
                fn()
            synchronize()
            repeats = 300
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            synchronize()
            row["us_per_call"] = (time.perf_counter() - started) / repeats * 1e6
        except Exception as error:
            row["failure"] = f"{type(error).__name__}: {error}"[:200]
        rows.append(row)
        print(f"  host {name:26s} {row.get('us_per_call', float('nan')):8.1f} us per call", flush=True)


def time_decode(rows: list[dict]) -> None:
    """One decode step for a batch of 64 sequences: bound by the fp32 state (64 KiB per head each way)."""
    from einsim.kernels.linear.config import decode_min_bytes

    batch = 64
    problem = Problem(batch=batch, q_heads=HEADS, kv_heads=HEADS, q_len=1, kv_len=1, head_dim=HEAD_DIM)
    q, k, v = (torch.randn(batch, HEADS, 1, HEAD_DIM, device=DEVICE[0], dtype=torch.bfloat16) for _ in range(3))
    state = torch.zeros(batch, HEADS, HEAD_DIM, HEAD_DIM, device=DEVICE[0])
    slope = torch.tensor(lightning_slopes(HEADS), device=DEVICE[0])
    row = {"kind": "decode", "backend": "einsim-linear-decode", "N": 1, "B": batch, "H": HEADS, "D": HEAD_DIM}
    try:
        row["ms"] = time_ms(lambda: linear_attention_decode(q, k, v, state, decay=slope))
        row["tbps"] = decode_min_bytes(problem) / (row["ms"] * 1e-3) / 1e12
    except Exception as error:
        row["failure"] = f"{type(error).__name__}: {error}"[:200]
    rows.append(row)
    print(f"  decode B={batch} {row.get('ms', float('nan')):.4f} ms {row.get('tbps', float('nan')):.2f} TB/s", flush=True)


def sweep_grid(problem: Problem, direction: str) -> list:
    """Candidate configs, grouped so that configs sharing a compiled kernel come together: the
    compiled shape is (CHUNK, BLOCK_C, num_warps, num_stages); SEGMENT is a runtime size (no
    recompilation), so each compiled shape is timed at several segment lengths."""
    segments = tuple(dict.fromkeys(s for s in (default_config(problem).SEGMENT, 1024, 2048, 8192)
                                   if s < problem.q_len))
    if direction == "fwd":
        shapes = ((64, 64, 4, 2), (64, 64, 8, 2), (64, 64, 4, 3), (64, 128, 8, 2), (128, 64, 8, 2), (64, 64, 8, 3))
        return [LinearConfig(CHUNK=c, BLOCK_C=b, SEGMENT=s, num_warps=w, num_stages=st)
                for c, b, w, st in shapes for s in segments]
    shapes = ((64, 64, 4, 2), (64, 64, 8, 2), (64, 128, 8, 2))
    return [LinearBackwardConfig(CHUNK=c, BLOCK_C=b, SEGMENT=s, num_warps=w, num_stages=st, store_states=True)
            for c, b, w, st in shapes for s in segments[:3]]


def sweep(case: Case, rows: list[dict], direction: str, decay: str = "none") -> None:
    """Time a grid of configs of ours (sweep_grid) on one shape, with or without decay; print the
    best and the default's time."""
    problem = case.problem
    slope = slope_for(case, decay)
    default = (default_config if direction == "fwd" else backward_default_config)(problem)
    best = None
    for config in sweep_grid(problem, direction):
        if time.time() > DEADLINE[0]:
            break
        reasons = (KERNEL_REASONS[direction])(config, problem)
        if reasons:
            continue
        row = {"kind": f"sweep-{direction}", "backend": OURS_FOR[decay], "decay": decay, "N": case.length,
               "B": case.batch, "config": repr(config), "default": config == default}
        try:
            if direction == "fwd":
                fn = (lambda cfg=config: linear_forward(case.q, case.k, case.v, decay=slope, config=cfg))
            else:
                fn = backward_timer(lambda q, k, v, cfg=config: linear_attention(
                    q, k, v, decay=slope, backward_config=cfg)[0], case)
            fn()
            synchronize()
            row["ms"] = time_ms(fn, rep=SWEEP_REP_MS)
            if "_chunk_walk" in LAST_LAUNCH:
                row.update({f"walk_{key}": value for key, value in LAST_LAUNCH["_chunk_walk"].items()})
            if best is None or row["ms"] < best["ms"]:
                best = row
        except Exception as error:
            row["failure"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
        rows.append(row)
        print(f"  sweep {direction} {decay:9s} N={case.length:6d} {row.get('ms', float('nan')):8.3f} ms {config}"
              + (" (default)" if row["default"] else "")
              + (f" FAILED {row['failure']}" if "failure" in row else "") + f"  [t={elapsed():.0f}s]", flush=True)
    if best is not None:
        print(f"  best {direction} {decay} N={case.length}: {best['ms']:.3f} ms {best['config']}", flush=True)


def _kernel_reasons():
    from einsim.kernels.registry import KERNELS

    return {"fwd": KERNELS["linear-fwd"].config_reasons, "bwd": KERNELS["linear-bwd"].config_reasons}


KERNEL_REASONS = _kernel_reasons()


def summarise(rows: list[dict]) -> None:
    """The comparison table: ms of each backend per N, ratios of fla over ours, and the crossover."""
    print("\n== linear attention, bf16, 64k tokens per call, H=16, D=128 (ms, median) ==")
    names = [n for n in VARIANTS]
    for direction in ("fwd", "bwd"):
        print(f"\n{direction}: " + " ".join(f"{n[:22]:>23s}" for n in names))
        times = {}
        for row in rows:
            if row.get("kind") == direction and "ms" in row:
                times[(row["backend"], row["N"])] = row["ms"]
        for length in sorted({n for _, n in times}):
            print(f"N={length:6d} " + " ".join(
                f"{times[(n, length)]:23.3f}" if (n, length) in times else f"{'-':>23s}" for n in names))
        for ours_name, theirs in (("einsim-linear", "fla-chunk_linear_attn"),
                                  ("einsim-linear-decay", "fla-chunk_simple_gla"),
                                  ("einsim-linear-retention", "fla-chunk_retention")):
            ratios = [f"{times[(theirs, n)] / times[(ours_name, n)]:.2f}" for n in sorted({n for _, n in times})
                      if (theirs, n) in times and (ours_name, n) in times]
            if ratios:
                print(f"  {theirs} / {ours_name}: {', '.join(ratios)}")
        crossing = [n for n in sorted({n for _, n in times})
                    if ("einsim-linear", n) in times and ("einsim-softmax", n) in times
                    and times[("einsim-linear", n)] < times[("einsim-softmax", n)]]
        print(f"  shortest N where linear (no decay) beats causal softmax: {crossing[0] if crossing else 'none measured'}")


def write_csv(path: str | None, rows: list[dict]) -> None:
    if not path or not rows:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fields = sorted({key for row in rows for key in row}, key=lambda k: (k not in ("kind", "backend", "N"), k))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None) -> int:
    global TOKENS, HEADS, HEAD_DIM
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--tokens", type=int, default=TOKENS, help="batch x N of every case")
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sweep", action="store_true", help="then time a grid of configs at the first "
                                                             "length given (until --budget-s)")
    parser.add_argument("--sweep-runs", default="fwd:none,fwd:lightning,bwd:none,bwd:lightning",
                        help="direction:decay pairs the sweep times, in order")
    parser.add_argument("--no-check", action="store_true")
    parser.add_argument("--check-length", type=int, default=None,
                        help="run the correctness checks on this length first (default: at every timed "
                             f"length up to {CHECK_MAX_LENGTH})")
    parser.add_argument("--check-decays", default="",
                        help="decays checked besides those of the variants: none, lightning, retention, steep")
    parser.add_argument("--no-extras", action="store_true", help="no host-time and decode timings at the end")
    parser.add_argument("--skip", default="", help="direction:variant pairs not to time, e.g. "
                                                  "bwd:fla-chunk_linear_attn")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="stop starting new measurements after this many seconds")
    directory = out_dir()
    parser.add_argument("--csv", default=str(directory / "linear.csv") if directory else None)
    args = parser.parse_args(argv)
    TOKENS, HEADS, HEAD_DIM = args.tokens, args.heads, args.head_dim
    DEADLINE[0] = time.time() + args.budget_s
    DEVICE[0] = args.device
    if args.device == "cuda" and not torch.cuda.is_available():
        print("needs a CUDA GPU (or --device cpu with TRITON_INTERPRET=1 for a smoke run)")
        return 2
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (interpreter)"
    print(f"GPU {name}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    try:
        import fla

        print(f"fla {getattr(fla, '__version__', '?')}", flush=True)
    except Exception as error:
        print(f"fla not importable: {error}", flush=True)
    lengths = parse_lengths(args.lengths, "--lengths")
    names = [n for n in args.variants.split(",") if n]
    rows: list[dict] = []
    if not args.no_check:
        check_decode(rows)
    decays = tuple(dict.fromkeys(VARIANTS[n][1] for n in names if n.startswith("einsim-linear")))
    decays += tuple(d for d in args.check_decays.split(",") if d and d not in decays)
    if not args.no_check and args.check_length:
        case = Case(args.check_length)
        check_case(case, rows, decays)
        del case
    skip = {tuple(item.split(":", 1)) for item in args.skip.split(",") if ":" in item}
    for length in lengths:
        try:
            case = Case(length)
            if not args.no_check and not args.check_length:
                check_case(case, rows, decays)
            time_case(case, rows, names, skip)
            del case
            empty_cache()
        except Exception:
            traceback.print_exc()
        write_csv(args.csv, rows)  # a job killed at its limit keeps what it measured
    if args.sweep:
        case = Case(lengths[0])
        for run in args.sweep_runs.split(","):
            direction, decay = run.split(":", 1)
            sweep(case, rows, direction, decay)
            write_csv(args.csv, rows)
        del case
    if not args.no_extras and time.time() < DEADLINE[0] + 10:  # cheap: tiny shapes, one decode step
        time_host(rows)
        time_decode(rows)
    write_csv(args.csv, rows)
    if args.csv:
        print(f"wrote {args.csv}")
    summarise(rows)
    failed = [r for r in rows if r.get("kind") == "check" and not r.get("ok") and r["backend"].startswith("einsim")
              and " vs " not in r["backend"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
