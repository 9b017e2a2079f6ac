"""Compiled cascades (einsim.kernels.compile) against FlexAttention compiled with the same
score_mod / mask_mod, in the same run on the GPU, forward and backward; plus cuDNN SDPA and the
hand-written fused kernels where a variant is plain attention (full, causal, window).

    python benchmarks/bench_variants.py                     # N = 2k and 16k, every variant
    python benchmarks/bench_variants.py --variants causal,softcap --lengths 2048
    python benchmarks/bench_variants.py --csv out.csv       # default $OUT/variants.csv if OUT is set

Shapes: bf16, batch x N = 16k tokens, hidden 2048, D = 128 (H = 16). Before any timing, each
variant is checked: against the float64 executor (einsum_cascades.execute) at a small shape,
and against the variant's torch twin (the Flex score_mod/mask_mod applied to fp32 scores) at the
benchmark's shapes, forward and gradients. TFLOP/s counts matmul FLOPs over the visible (query,
key) pairs of the variant's own mask (counted from its mask_mod on the GPU), the same for every
backend; ratios are peer_ms / compiled_ms. Host time per call is measured at a tiny shape.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402

from einsim.einsum_cascades import execute, library_names  # noqa: E402
from einsim.kernels import attention, compile as compile_cascade  # noqa: E402
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.shapes import parse_lengths  # noqa: E402

HIDDEN = 2048
TOKENS = 16384
HEAD_DIM = 128
DEADLINE = [float("inf")]
START = [time.time()]  # the log's [elapsed] stamps: where a GPU window's seconds go
# --smoke: the checks and the host timing at tiny shapes, no timing of kernels (on the CPU under
# TRITON_INTERPRET=1 too), so a GPU window is never spent finding a typo.
SMOKE = [False]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# -- what each variant is -------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A library cascade and its FlexAttention twin.

    `mods(extras, n)` returns (score_mod, mask_mod) for Flex (either may be None), written
    against the cascade's formula; `extras(problem, generator)` builds the cascade's extra input
    tensors (and `symbols` its size symbols). `plain` names the hand-written kernel's mask
    (causal, window) when the variant is plain attention, for the hand-written and cuDNN rows.
    """

    name: str
    cascade: str
    mods: Callable
    extras: Callable = lambda problem, generator: {}
    symbols: dict = field(default_factory=dict)
    plain: tuple | None = None
    prebuilt_mask: bool = False  # time with f.block_mask(...) built once (FlexAttention's way)
    causal: bool = False  # the mask includes the causal one (for the roofline CSV's problem)
    group: int = 1  # query heads per key/value head (GQA)


def _causal(b, h, q_idx, kv_idx):
    return kv_idx <= q_idx


def _no_mods(extras, n):
    return None, None


def _causal_mods(extras, n):
    return None, _causal


def _window_mods(left):
    def mods(extras, n):
        def mask(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (kv_idx >= q_idx - left)
        return None, mask
    return mods


def _softcap_mods(cap: float):
    def mods(extras, n):
        def score(s, b, h, q_idx, kv_idx):
            return cap * torch.tanh(s / cap)
        return score, None
    return mods


def _alibi_extras(problem, generator):
    # the ALiBi paper's slopes: 2^(-8 h / H) for h = 1..H
    heads = problem.q_heads
    exponents = torch.arange(1, heads + 1, dtype=torch.float32, device=DEVICE) * (-8.0 / heads)
    return {"SLOPE": torch.pow(2.0, exponents)}


def _alibi_mods(extras, n):
    slopes = extras["SLOPE"]

    def score(s, b, h, q_idx, kv_idx):
        return s - slopes[h] * (q_idx - kv_idx)
    return score, _causal


def _documents_extras(problem, generator):
    # documents of 1024 tokens, the same ids for queries and keys
    ids = (torch.arange(problem.q_len, device=DEVICE) // 1024).expand(problem.batch, -1).contiguous()
    return {"DQ": ids, "DK": ids}


def _documents_mods(extras, n):
    ids = extras["DQ"][0]

    def mask(b, h, q_idx, kv_idx):
        return (ids[q_idx] == ids[kv_idx]) & (kv_idx <= q_idx)
    return None, mask


def _sinks_mods(sinks: int, window: int):
    def mods(extras, n):
        def mask(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & ((kv_idx < sinks) | (kv_idx >= q_idx - (window - 1)))
        return None, mask
    return mods


VARIANTS = [
    Variant("full", "fusemax", _no_mods, plain=(False, None)),
    Variant("causal", "attention-causal", _causal_mods, plain=(True, None), causal=True),
    # GQA 4 (16 query heads, 4 key/value heads, as Llama 3 8B's 32/8)
    Variant("gqa", "gqa", _no_mods, plain=(False, None), group=4),
    Variant("window-256", "attention-window", _window_mods(255),
            symbols={"window_left": 255, "window_right": 0}, plain=(False, (255, 0))),
    # the library's variants at their default symbols (softcap 50; sinks 4, window 256)
    Variant("softcap", "softcap", _softcap_mods(50.0)),
    Variant("alibi", "alibi", _alibi_mods, extras=_alibi_extras, causal=True),
    Variant("sinks-window", "sinks-window", _sinks_mods(4, 256), causal=True),
    # its block mask built once outside the timing, as Flex's create_block_mask is
    Variant("packed-docs", "packed-documents", _documents_mods, extras=_documents_extras,
            prebuilt_mask=True, causal=True),
]


# --sweep: candidate configs of the compiled kernels at D = 128 (from the hand-written kernels'
# H100 sweeps, docs/performance.md), timed after the defaults when the budget allows.
FORWARD_SWEEP = [
    FlashConfig(128, 64, 8, 3), FlashConfig(128, 128, 8, 2),
    FlashConfig(128, 128, 8, 3, warp_specialize=True), FlashConfig(128, 64, 8, 4, warp_specialize=True),
    FlashConfig(128, 128, 8, 3, exp_split=2), FlashConfig(64, 128, 4, 3),
]
BACKWARD_SWEEP = [
    FlashBackwardConfig(64, 128, 128, 64, 8, 3, one_launch=True),
    FlashBackwardConfig(64, 128, 128, 64, 8, 2), FlashBackwardConfig(32, 128, 128, 64, 8, 3),
    FlashBackwardConfig(64, 128, 64, 64, 8, 3), FlashBackwardConfig(64, 64, 64, 64, 4, 2),
    FlashBackwardConfig(64, 128, 128, 64, 8, 3, dq_atomic=True),
]
OPTIONS = {"peers": ("flex", "einsim-handwritten", "cudnn"), "sweep": (), "profile": ()}


# -- inputs, references, timing ---------------------------------------------------------------------
def make_qkv(problem: Problem, generator, requires_grad=False):
    def randn(*shape):
        return torch.randn(*shape, device=DEVICE, dtype=torch.bfloat16, generator=generator)
    p = problem
    q = randn(p.batch, p.q_heads, p.q_len, p.head_dim)
    k = randn(p.batch, p.kv_heads, p.kv_len, p.head_dim)
    v = randn(p.batch, p.kv_heads, p.kv_len, p.v_head_dim)
    return q, k, v


def twin_reference(q, k, v, score_mod, mask_mod, rows=None, chunk=1024):
    """The variant's torch twin in fp32: softmax(score_mod(q·kᵀ·scale) masked by mask_mod)·v,
    over blocks of query rows (`rows`: which rows, default all). Rows that see no key give 0."""
    batch, heads, q_len, d = q.shape
    kv_len = k.shape[2]
    group = heads // k.shape[1]
    keys = k.float().repeat_interleave(group, 1)
    values = v.float().repeat_interleave(group, 1)
    rows = torch.arange(q_len, device=q.device) if rows is None else rows
    b = torch.arange(batch, device=q.device)[:, None, None, None]
    h = torch.arange(heads, device=q.device)[None, :, None, None]
    kv_idx = torch.arange(kv_len, device=q.device)[None, None, None, :]
    outs = []
    for start in range(0, rows.numel(), chunk):
        r = rows[start:start + chunk]
        q_idx = r[None, None, :, None]
        scores = (q[:, :, r].float() @ keys.transpose(-1, -2)) / math.sqrt(d)
        if score_mod is not None:
            scores = score_mod(scores, b, h, q_idx, kv_idx)
        if mask_mod is not None:
            scores = scores.masked_fill(~mask_mod(b, h, q_idx, kv_idx).expand_as(scores), float("-inf"))
        outs.append(torch.softmax(scores, -1).nan_to_num(0.0) @ values)
    return torch.cat(outs, 2)


def visible_pairs(mask_mod, problem: Problem) -> int:
    """(query, key) pairs one head of batch 0 sees, counted from the mask on the GPU."""
    if mask_mod is None:
        return problem.q_len * problem.kv_len
    total = 0
    kv_idx = torch.arange(problem.kv_len, device=DEVICE)[None, :]
    zero = torch.zeros((), dtype=torch.long, device=DEVICE)
    for start in range(0, problem.q_len, 2048):
        q_idx = torch.arange(start, min(problem.q_len, start + 2048), device=DEVICE)[:, None]
        total += int(mask_mod(zero, zero, q_idx, kv_idx).sum())
    return total


def flops(problem: Problem, pairs: int, kind: str) -> float:
    per_pair = (2 * (3 * problem.head_dim + 2 * problem.v_head_dim) if kind == "bwd"
                else 2 * (problem.head_dim + problem.v_head_dim))
    return float(problem.batch * problem.q_heads * pairs * per_pair)


def time_ms(fn: Callable[[], object]) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def backward_timer(forward: Callable, q, k, v, do) -> Callable[[], object]:
    """Time only the backward: the forward runs once, its graph is kept and replayed."""
    leaves = tuple(t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = forward(*leaves)
    return lambda: torch.autograd.grad(out, leaves, do, retain_graph=True)


def kernel_times(fn: Callable[[], object], calls: int = 5) -> list[tuple[str, float]]:
    """(kernel name, device ms per call) of what `fn` launches, longest first (torch.profiler
    over `calls` calls after one warm-up): which kernel of a backward costs what."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        synchronize()
    found = []
    for event in prof.key_averages():
        total = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
        if total > 0:
            found.append((event.key, total / calls / 1000.0))
    return sorted(found, key=lambda item: -item[1])


def relative_error(got, want) -> float:
    got, want = got.float(), want.float()
    return ((got - want).norm() / want.norm().clamp_min(1e-6)).item()


_flex = None


def flex_call(score_mod, mask_mod, problem: Problem):
    """FlexAttention compiled (recompile limits raised so it never falls back to eager)."""
    global _flex
    import torch._dynamo
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.config.cache_size_limit = 1024
    for name in ("recompile_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 4096)
    if _flex is None:
        _flex = torch.compile(flex_attention, dynamic=False)
    block_mask = None
    if mask_mod is not None:
        block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=problem.q_len,
                                       KV_LEN=problem.kv_len, device=DEVICE)
    gqa = problem.q_heads != problem.kv_heads
    return lambda q, k, v: _flex(q, k, v, score_mod=score_mod, block_mask=block_mask,
                                 enable_gqa=gqa)


def cudnn_call(causal: bool, gqa: bool = False):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            if gqa:  # cuDNN reads the key/value heads in place (no repeat)
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


# -- checks ------------------------------------------------------------------------------------------
def executor_check(variant: Variant, generator) -> str:
    """The compiled kernel on the GPU against the float64 executor at a small shape."""
    f = compile_cascade(variant.cascade)
    # head dim as the benchmark's, so that the check compiles no kernel the timing does not use
    problem = Problem(batch=1, q_heads=2 * variant.group, kv_heads=2, q_len=200, kv_len=200,
                      head_dim=HEAD_DIM, dtype="bf16")
    q, k, v = make_qkv(problem, generator)
    extras = variant.extras(problem, generator)
    out = f(q, k, v, **extras, **variant.symbols).float().cpu().numpy()
    form = f.form
    scale = 1 / math.sqrt(problem.head_dim)
    inputs = {form.q: np.swapaxes(q.double().cpu().numpy() * scale, 2, 3),
              form.k: np.swapaxes(k.double().cpu().numpy(), 2, 3),
              form.v: np.swapaxes(v.double().cpu().numpy(), 2, 3)}
    inputs.update({n: t.double().cpu().numpy() for n, t in extras.items()})
    reference = np.swapaxes(execute(form.cascade, inputs, sizes=variant.symbols or None)[form.output], 2, 3)
    error = float(np.abs(out - reference).max())
    if not error < 3e-2:
        raise AssertionError(f"executor check: max |error| {error:.3g}")
    return f"executor max|err| {error:.1e}"


def twin_check(variant: Variant, problem: Problem, generator) -> str:
    """Forward at the benchmark shape (a sample of rows) and gradients at a reduced shape
    against the variant's fp32 torch twin."""
    f = compile_cascade(variant.cascade)
    q, k, v = make_qkv(problem, generator)
    extras = variant.extras(problem, generator)
    score_mod, mask_mod = variant.mods(extras, problem.q_len)
    out = f(q, k, v, **extras, **variant.symbols)
    n = problem.q_len
    rows = torch.cat([torch.arange(0, min(n, 512)), torch.arange(max(0, n - 512), n)]).unique().to(DEVICE)
    error = relative_error(out[:, :, rows], twin_reference(q, k, v, score_mod, mask_mod, rows))
    small = Problem(batch=1, q_heads=4, kv_heads=4 // variant.group, q_len=min(n, 1024),
                    kv_len=min(n, 1024),
                    head_dim=problem.head_dim, dtype="bf16")
    qs, ks, vs = (t.requires_grad_(True) for t in make_qkv(small, generator))
    extras_s = variant.extras(small, generator)
    mods_s = variant.mods(extras_s, small.q_len)
    out_s = f(qs, ks, vs, **extras_s, **variant.symbols)
    do = torch.randn_like(out_s)
    grads = torch.autograd.grad(out_s, (qs, ks, vs), do)
    leaves = tuple(t.detach().float().requires_grad_(True) for t in (qs, ks, vs))
    ref = twin_reference(*leaves, *mods_s)
    ref_grads = torch.autograd.grad(ref, leaves, do.float())
    grad_errors = [relative_error(g, r) for g, r in zip(grads, ref_grads)]
    if not (error < 2e-2 and max(grad_errors) < 3e-2):
        raise AssertionError(f"twin check: out {error:.2e}, dq/dk/dv "
                             + "/".join(f"{e:.2e}" for e in grad_errors))
    return f"twin out {error:.1e} dq/dk/dv " + "/".join(f"{e:.1e}" for e in grad_errors)


def synchronize():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def host_us(variant: Variant, generator, calls: int = 200) -> float:
    """Host wall time per call of the compiled kernel at a tiny shape (launch-bound)."""
    f = compile_cascade(variant.cascade)
    problem = Problem(batch=1, q_heads=2 * variant.group, kv_heads=2, q_len=64, kv_len=64,
                      head_dim=HEAD_DIM, dtype="bf16")
    q, k, v = make_qkv(problem, generator)
    extras = variant.extras(problem, generator)
    f(q, k, v, **extras, **variant.symbols)
    synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        f(q, k, v, **extras, **variant.symbols)
    synchronize()
    return (time.perf_counter() - start) / calls * 1e6


# -- the run --------------------------------------------------------------------------------------------
CHECKED: dict[str, bool] = {}  # variant -> passed the executor check (run once per variant)


def run_variant(variant: Variant, lengths, rows: list[dict]) -> None:
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    if variant.cascade not in library_names() and not Path(variant.cascade).exists():
        print(f"{variant.name}: skipped, no cascade {variant.cascade!r} in the library yet")
        rows.append(dict(variant=variant.name, N=0, kind="skip", backend="", ms=0, tflops=0,
                         ratio=0, note=f"no cascade {variant.cascade}"))
        write_csv(rows)
        return
    if variant.name in CHECKED:
        if not CHECKED[variant.name]:
            return
    else:
        try:
            note = executor_check(variant, generator)
            host = host_us(variant, generator, calls=3 if SMOKE[0] else 200)
            print(f"[{time.time() - START[0]:5.1f}s] {variant.name}: {note}; host {host:.1f} us/call",
                  flush=True)
            rows.append(dict(variant=variant.name, N=0, kind="host", backend="einsim-compiled",
                             ms=host / 1000, tflops=0, ratio=0, note=note))
            CHECKED[variant.name] = True
        except Exception as error:  # noqa: BLE001 - a failing variant is a result; go on
            print(f"{variant.name}: FAILED executor check: {type(error).__name__}: {error}")
            traceback.print_exc()
            rows.append(dict(variant=variant.name, N=0, kind="check", backend="einsim-compiled",
                             ms=0, tflops=0, ratio=0, note=f"FAIL {error}"))
            CHECKED[variant.name] = False
            return
    f = compile_cascade(variant.cascade)
    for n in lengths:
        if time.time() > DEADLINE[0]:
            print("  (time budget spent)")
            return
        problem = Problem(batch=max(1, TOKENS // n), q_heads=HIDDEN // HEAD_DIM,
                          kv_heads=HIDDEN // HEAD_DIM // variant.group, q_len=n, kv_len=n,
                          head_dim=HEAD_DIM, dtype="bf16")
        if SMOKE[0]:
            problem = Problem(batch=1, q_heads=2 * variant.group, kv_heads=2, q_len=n, kv_len=n,
                              head_dim=32, dtype="bf16")
        try:
            print(f"[{time.time() - START[0]:5.1f}s]   {variant.name} N={n}: "
                  f"{twin_check(variant, problem, generator)}", flush=True)
        except Exception as error:  # noqa: BLE001
            print(f"  {variant.name} N={n}: FAILED twin check: {type(error).__name__}: {error}")
            rows.append(dict(variant=variant.name, N=n, kind="check", backend="einsim-compiled",
                             ms=0, tflops=0, ratio=0, note=f"FAIL {error}"))
            continue
        if SMOKE[0]:
            continue
        q, k, v = make_qkv(problem, generator)
        do = torch.randn_like(q)
        extras = variant.extras(problem, generator)
        score_mod, mask_mod = variant.mods(extras, n)
        pairs = visible_pairs(mask_mod, problem)
        keywords = dict(extras, **variant.symbols)
        if variant.prebuilt_mask:
            keywords["block_mask"] = f.block_mask(q, k, v, **extras, **variant.symbols)
        backends = {"einsim-compiled": lambda q_, k_, v_: f(q_, k_, v_, **keywords)}
        peers = OPTIONS["peers"]
        if "flex" in peers:
            try:
                backends["flex"] = flex_call(score_mod, mask_mod, problem)
            except Exception as error:  # noqa: BLE001
                print(f"  flex unavailable: {type(error).__name__}: {error}")
        if variant.plain is not None:
            causal, window = variant.plain
            if "einsim-handwritten" in peers:
                backends["einsim-handwritten"] = (
                    lambda q_, k_, v_: attention(q_, k_, v_, causal=causal, window=window))
            if window is None and "cudnn" in peers:
                backends["cudnn"] = cudnn_call(causal, variant.group > 1)
        for kind in ("fwd", "bwd"):
            times = {}
            for backend, call in backends.items():
                if time.time() > DEADLINE[0]:
                    print(f"  (time budget spent: {variant.name} N={n} {kind} {backend} not timed)")
                    break
                try:
                    if kind == "fwd":
                        ms = time_ms(lambda: call(q, k, v))
                    else:
                        ms = time_ms(backward_timer(call, q, k, v, do))
                except Exception as error:  # noqa: BLE001
                    print(f"  {variant.name} N={n} {kind} {backend}: {type(error).__name__}: "
                          f"{str(error)[:300]}")
                    continue
                times[backend] = ms
                if variant.name in OPTIONS["profile"]:
                    try:
                        fn = (lambda: call(q, k, v)) if kind == "fwd" else backward_timer(call, q, k, v, do)
                        for name, kernel_ms in kernel_times(fn)[:6]:
                            print(f"    profile {variant.name} N={n} {kind} {backend}: {kernel_ms:8.4f} ms  {name[:90]}")
                            rows.append(dict(variant=variant.name, N=n, kind=f"profile-{kind}",
                                             backend=backend, ms=kernel_ms, tflops=0, ratio=0,
                                             note=name[:200]))
                    except Exception as error:  # noqa: BLE001 - the profile is a diagnostic
                        print(f"    profile {variant.name} {backend}: {type(error).__name__}: {error}")
            swept = kind in OPTIONS["sweep"] or f"{variant.name}:{kind}" in OPTIONS["sweep"]
            sweep = (FORWARD_SWEEP if kind == "fwd" else BACKWARD_SWEEP) if swept else []
            for config in sweep:
                if time.time() > DEADLINE[0]:
                    break
                option = "config" if kind == "fwd" else "backward_config"

                def configured(q_, k_, v_, config=config, option=option):
                    return f(q_, k_, v_, **extras, **variant.symbols, **{option: config})
                try:
                    times[f"einsim-compiled {config}"] = (
                        time_ms(lambda: configured(q, k, v)) if kind == "fwd"
                        else time_ms(backward_timer(configured, q, k, v, do)))
                except Exception as error:  # noqa: BLE001 - a config that fails is a result
                    print(f"  {variant.name} N={n} {kind} {config}: {type(error).__name__}: "
                          f"{str(error)[:200]}")
            ours = times.get("einsim-compiled")
            for backend, ms in times.items():
                tflops = flops(problem, pairs, kind) / ms / 1e9
                ratio = ms / ours if ours else float("nan")
                rows.append(dict(variant=variant.name, N=n, kind=kind, backend=backend, ms=ms,
                                 tflops=tflops, ratio=ratio, note=f"pairs={pairs}",
                                 batch=problem.batch, heads=problem.q_heads,
                                 kv_heads=problem.kv_heads, causal=int(variant.causal),
                                 cascade=f.cascade.name))
                write_csv(rows)
                print(f"  {variant.name:12s} N={n:6d} {kind} {backend:20s} {ms:9.3f} ms "
                      f"{tflops:7.1f} TFLOP/s  {'peer/compiled ' + format(ratio, '.3f') if backend != 'einsim-compiled' else ''}",
                      flush=True)


CSV_PATH = [None]


def write_csv(rows: list[dict]) -> None:
    """Rewrite the CSV after every measurement, so a run killed at its time limit keeps all;
    beside it `<name>-roofline.csv` in the measured-runs format of `einsim roofline --measured`
    (kind, backend, N, D, causal, ms, tflops, tbps, batch, heads, kv_heads, cascade), backend
    '<variant> <backend>', cascade the compiled cascade's name (roofline places a row only
    beside its cascade)."""
    if not CSV_PATH[0] or not rows:
        return
    fields = ["variant", "N", "kind", "backend", "ms", "tflops", "ratio", "note"]
    with open(CSV_PATH[0], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    roofline = str(CSV_PATH[0]).removesuffix(".csv") + "-roofline.csv"
    with open(roofline, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["kind", "backend", "N", "D", "causal", "ms", "tflops",
                                                   "tbps", "batch", "heads", "kv_heads", "cascade"])
        writer.writeheader()
        for row in rows:
            if row["kind"] in ("fwd", "bwd"):
                writer.writerow(dict(kind="prefill" if row["kind"] == "fwd" else "backward",
                                     backend=f"{row['variant']} {row['backend']}", N=row["N"],
                                     D=HEAD_DIM, causal=row.get("causal", 0), ms=row["ms"],
                                     tflops=row["tflops"], tbps=0, batch=row.get("batch", 1),
                                     heads=row.get("heads", 1),
                                     kv_heads=row.get("kv_heads", row.get("heads", 1)),
                                     cascade=row.get("cascade", "")))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS),
                        help="comma-separated; NAME:N1/N2 times NAME at those lengths only")
    parser.add_argument("--lengths", default="2048,16384")
    parser.add_argument("--csv", default=None)
    parser.add_argument("--peers", default=",".join(OPTIONS["peers"]),
                        help="peers to time beside the compiled kernels (default all: "
                             "flex,einsim-handwritten,cudnn; '' for none)")
    parser.add_argument("--sweep", default="", help="fwd,bwd: also time candidate configs of "
                        "the compiled kernels (FORWARD_SWEEP, BACKWARD_SWEEP); VARIANT:bwd for "
                        "one variant only")
    parser.add_argument("--profile", default="", help="variants whose every timed call is also "
                        "profiled (torch.profiler: device ms per kernel, the 6 longest)")
    parser.add_argument("--length-major", action="store_true",
                        help="loop over lengths outside variants (every variant at the first "
                             "length before any at the second)")
    parser.add_argument("--smoke", action="store_true",
                        help="checks and host timing only, at tiny shapes (runs on CPU under "
                             "TRITON_INTERPRET=1)")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="stop starting new measurements after this many seconds")
    args = parser.parse_args(argv)
    START[0] = time.time()
    DEADLINE[0] = time.time() + args.budget_s
    SMOKE[0] = args.smoke
    OPTIONS["peers"] = tuple(p for p in args.peers.split(",") if p)
    OPTIONS["sweep"] = tuple(k for k in args.sweep.split(",") if k)
    OPTIONS["profile"] = tuple(k for k in args.profile.split(",") if k)
    if DEVICE != "cuda" and not args.smoke:
        print("bench_variants needs a CUDA GPU (or --smoke under TRITON_INTERPRET=1)")
        return 2
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "none (smoke run)"
    print(f"GPU {gpu}, torch {torch.__version__}, triton {triton.__version__}")
    # a variant may name its own lengths: causal:2048 (or causal:2048/16384)
    wanted, only = [], {}
    for item in args.variants.split(","):
        name, _, lengths_given = item.partition(":")
        wanted.append(name)
        if lengths_given:
            only[name] = {int(n) for n in lengths_given.split("/")}
    unknown = sorted(set(wanted) - {v.name for v in VARIANTS})
    if unknown:
        print(f"unknown variants {unknown}; known: {', '.join(v.name for v in VARIANTS)}")
        return 2
    lengths = parse_lengths(args.lengths, "--lengths")
    CSV_PATH[0] = args.csv or (os.path.join(os.environ["OUT"], "variants.csv") if os.environ.get("OUT") else None)
    rows: list[dict] = []

    def run(name, ns):
        ns = [n for n in ns if name not in only or n in only[name]]
        if ns:
            run_variant(next(v for v in VARIANTS if v.name == name), ns, rows)

    if args.length_major:  # every variant at the first length, then at the next
        for n in lengths:
            for name in wanted:
                run(name, [n])
    else:
        for name in wanted:  # in the order asked: the most informative first
            run(name, lengths)
    write_csv(rows)
    if CSV_PATH[0]:
        print(f"wrote {CSV_PATH[0]}")
    print(f"\n{'variant':12s} {'N':>6s} {'pass':4s} {'compiled':>9s} {'flex':>9s} {'hand':>9s} "
          f"{'cudnn':>9s}  (TFLOP/s; compiled/flex, compiled/hand, compiled/cudnn)")
    table: dict[tuple, dict] = {}
    for row in rows:
        if row["kind"] in ("fwd", "bwd"):
            table.setdefault((row["variant"], row["N"], row["kind"]), {})[row["backend"]] = row["tflops"]
    for (name, n, kind), values in table.items():
        ours = values.get("einsim-compiled", float("nan"))

        def cell(backend):
            return f"{values[backend]:9.1f}" if backend in values else f"{'-':>9s}"

        ratios = " ".join(f"{ours / values[b]:.2f}" if b in values else "-"
                          for b in ("flex", "einsim-handwritten", "cudnn"))
        print(f"{name:12s} {n:6d} {kind:4s} {ours:9.1f} {cell('flex')} {cell('einsim-handwritten')} "
              f"{cell('cudnn')}  {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
