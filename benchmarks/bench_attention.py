"""The fused attention kernels (`attention-fwd`, `attention-bwd`) against what users would pick
instead, timed in the same run on the GPU: torch SDPA (flash and cuDNN backends) and
FlexAttention (compiled once per shape). Correctness is checked first, at real sizes, against an
fp32 reference; then forward and backward are timed with triton.testing.do_bench medians.

    python benchmarks/bench_attention.py                  # N = 1k..16k, D 64/128, causal and not
    python benchmarks/bench_attention.py --quick          # N = 4k and 16k only
    python benchmarks/bench_attention.py --sweep fwd,bwd  # time candidate configs, print the best
    python benchmarks/bench_attention.py --csv out.csv    # default $OUT/attention.csv if OUT is set

Shapes follow the anchors (../shared/anchors/h100-peers.csv): bf16, batch x N = 16k tokens,
hidden 2048 (H = 2048 / D). TFLOP/s counts matmul FLOPs over visible (query, key) pairs for
every backend alike (Problem.forward_flops / backward_flops; causal is about half of
dense); ratios are peer_ms / our_ms. A new kernel or peer is one more entry of VARIANTS.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

from einsim.einsum_cascades.reference import attention_reference_torch  # noqa: E402
from einsim.errors import ShapeError  # noqa: E402
from einsim.kernels import attention  # noqa: E402
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig  # noqa: E402
from einsim.kernels.flash.forward import flash_forward  # noqa: E402
from einsim.kernels.launch import LAST_LAUNCH  # noqa: E402
from einsim.problem import Problem  # noqa: E402
from einsim.kernels.registry import KERNELS  # noqa: E402
from einsim.shapes import parse_lengths  # noqa: E402

HIDDEN = 2048
TOKENS = 16384
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEADLINE = [float("inf")]  # wall-clock time after which sweeps and timings stop (--budget-s)


# -- inputs and timing -----------------------------------------------------------------------
@dataclass
class Case:
    """One shape's tensors, shared by every variant timed on it."""

    problem: Problem
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    do: torch.Tensor

    @classmethod
    def make(cls, problem: Problem, seed: int = 0) -> "Case":
        generator = torch.Generator(device="cuda").manual_seed(seed)
        dtype = DTYPES[problem.dtype]
        p = problem

        def randn(*shape):
            return torch.randn(*shape, device="cuda", dtype=dtype, generator=generator)

        return cls(p, randn(p.batch, p.q_heads, p.q_len, p.head_dim),
                   randn(p.batch, p.kv_heads, p.kv_len, p.head_dim),
                   randn(p.batch, p.kv_heads, p.kv_len, p.v_head_dim),
                   randn(p.batch, p.q_heads, p.q_len, p.v_head_dim))

    def leaves(self):
        return tuple(t.detach().clone().requires_grad_(True) for t in (self.q, self.k, self.v))


def time_ms(fn: Callable[[], object]) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def backward_timer(forward: Callable, case: Case) -> Callable[[], object]:
    """Time only the backward: the forward runs once, its graph is kept and replayed."""
    q, k, v = case.leaves()
    out = forward(q, k, v)
    return lambda: torch.autograd.grad(out, (q, k, v), case.do, retain_graph=True)


# -- the variants: ours and the peers ----------------------------------------------------------
def ours_forward(case: Case, config=None):
    p = case.problem
    return lambda: flash_forward(case.q, case.k, case.v, causal=p.causal, window=p.window,
                                 config=config)


def ours_backward(case: Case, config=None):
    p = case.problem
    return backward_timer(lambda q, k, v: attention(q, k, v, causal=p.causal, window=p.window,
                                                    backward_config=config), case)


def ours_backward_one_launch(case: Case):
    default = KERNELS["attention-bwd"].default_config(case.problem)
    return ours_backward(case, replace(default, one_launch=not default.one_launch))


def _sdpa(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                  enable_gqa=q.shape[1] != k.shape[1])
    return run


def _square_only(problem: Problem) -> bool:
    # SDPA's causal mask is top-left aligned; ours (and the reference's) bottom-right. They agree
    # when q_len == kv_len, the only shapes compared with SDPA here.
    return problem.q_len == problem.kv_len and problem.window is None


def sdpa_forward(backend_name: str):
    def build(case: Case):
        run = _sdpa(backend_name)
        return lambda: run(case.q, case.k, case.v, case.problem.causal)
    return build


def sdpa_backward(backend_name: str):
    def build(case: Case):
        run = _sdpa(backend_name)
        return backward_timer(lambda q, k, v: run(q, k, v, case.problem.causal), case)
    return build


_flex_compiled = None


def _flex(case: Case):
    """FlexAttention compiled once (per shape: dynamo recompiles; its limits are raised so it
    never silently falls back to the eager path, which ran at 7 TFLOP/s)."""
    global _flex_compiled
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 1024
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 1024
    if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
        torch._dynamo.config.accumulated_recompile_limit = 4096
    if _flex_compiled is None:
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    p = case.problem
    block_mask = None
    if p.causal or p.window is not None:
        offset = p.kv_len - p.q_len
        left, right = p.window if p.window is not None else (None, None)

        def mask_mod(b, h, q_idx, kv_idx):
            position = q_idx + offset
            keep = kv_idx <= position if p.causal else kv_idx >= 0
            if left is not None:
                keep = keep & (kv_idx >= position - left) & (kv_idx <= position + right)
            return keep

        block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=p.q_len, KV_LEN=p.kv_len,
                                       device="cuda")
    gqa = p.q_heads != p.kv_heads
    return lambda q, k, v: _flex_compiled(q, k, v, block_mask=block_mask, enable_gqa=gqa)


def flex_forward(case: Case):
    run = _flex(case)
    return lambda: run(case.q, case.k, case.v)


def flex_backward(case: Case):
    return backward_timer(_flex(case), case)


@dataclass(frozen=True)
class Variant:
    """One row kind of the table: a backend timed on a pass ('prefill' forward or 'backward')."""

    backend: str
    kind: str
    build: Callable[[Case], Callable[[], object]]
    ours: bool = False
    applies: Callable[[Problem], bool] = lambda problem: True


VARIANTS = [
    Variant("einsim", "prefill", ours_forward, ours=True),
    Variant("sdpa_flash", "prefill", sdpa_forward("FLASH_ATTENTION"), applies=_square_only),
    Variant("sdpa_cudnn", "prefill", sdpa_forward("CUDNN_ATTENTION"), applies=_square_only),
    Variant("flex", "prefill", flex_forward),
    Variant("einsim", "backward", ours_backward, ours=True),
    Variant("sdpa_flash", "backward", sdpa_backward("FLASH_ATTENTION"), applies=_square_only),
    Variant("sdpa_cudnn", "backward", sdpa_backward("CUDNN_ATTENTION"), applies=_square_only),
    Variant("flex", "backward", flex_backward),
    # the default backward config with one_launch flipped (a comparison of ours with ours)
    Variant("ours-flip1L", "backward", ours_backward_one_launch),
]


def flops(problem: Problem, kind: str) -> float:
    return problem.backward_flops() if kind == "backward" else problem.forward_flops()


def min_bytes(problem: Problem, kind: str) -> int:
    return problem.backward_min_bytes() if kind == "backward" else problem.forward_min_bytes()


# -- correctness ----------------------------------------------------------------------------
def reference_fp32(q, k, v, problem: Problem, do=None):
    """softmax(q kᵀ scale + mask) v in fp32 (the float64 oracle's formula; fp32 for GPU sizes),
    with lse and, given do, the gradients."""
    q, k, v = (t.detach().float().requires_grad_(do is not None) for t in (q, k, v))
    out, lse = attention_reference_torch(q, k, v, causal=problem.causal, window=problem.window,
                                         dtype=torch.float32)
    grads = None
    if do is not None:
        grads = torch.autograd.grad(out, (q, k, v), do.float())
    return out.detach(), lse.detach(), grads


def relative_error(got, want) -> float:
    got, want = got.float(), want.float()
    finite = torch.isfinite(want)
    if not finite.all():
        if not torch.equal(torch.isinf(got) & (got < 0), torch.isinf(want) & (want < 0)):
            return float("inf")
        got, want = got[finite], want[finite]
    if want.numel() == 0:
        return 0.0
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item()


CHECKS = [
    # (batch, q_heads, kv_heads, q_len, kv_len, head_dim, causal, window, dtype)
    (2, 16, 16, 2048, 2048, 128, False, None, "bf16"),
    (2, 16, 16, 2048, 2048, 128, True, None, "bf16"),
    (2, 32, 32, 2048, 2048, 64, True, None, "bf16"),
    (2, 32, 32, 2048, 2048, 64, False, None, "fp16"),
    (1, 16, 4, 1000, 1300, 80, True, None, "bf16"),
    (1, 12, 3, 777, 777, 96, False, (200, 0), "fp16"),
    (3, 8, 8, 300, 17, 128, True, None, "bf16"),
    (1, 8, 2, 1, 4096, 128, True, None, "bf16"),
    (1, 4, 4, 513, 513, 256, False, (64, 64), "bf16"),
]
TOLERANCE = {"bf16": (2e-2, 5e-2), "fp16": (4e-3, 1e-2)}  # (forward, gradients), relative to max


def run_checks(rows: list[dict]) -> bool:
    """Our kernels vs the fp32 reference (and SDPA flash vs it, for scale) at GPU sizes, with
    poisoned outputs. Returns whether all passed."""
    all_ok = True
    print("\ncorrectness (max |error| / max |reference|; outputs poisoned with NaN first)")
    for batch, hq, hkv, nq, nk, d, causal, window, dtype in CHECKS:
        problem = Problem(batch=batch, q_heads=hq, kv_heads=hkv, q_len=nq, kv_len=nk, head_dim=d, causal=causal, window=window,
                                   dtype=dtype)
        case = Case.make(problem, seed=1)
        out_ref, lse_ref, grads_ref = reference_fp32(case.q, case.k, case.v, problem, case.do)
        out = torch.full_like(out_ref, float("nan"), dtype=case.q.dtype)
        lse = torch.full_like(lse_ref, float("nan"))
        flash_forward(case.q, case.k, case.v, causal=causal, window=window, out=out, lse=lse)
        errors = {"out": relative_error(out, out_ref), "lse": relative_error(lse, lse_ref)}
        forward_default = KERNELS["attention-fwd"].default_config(problem)
        for split in (2, 4):
            config = replace(forward_default, exp_split=split)
            if not KERNELS["attention-fwd"].config_reasons(config, problem):
                split_out, _ = flash_forward(case.q, case.k, case.v, causal=causal,
                                             window=window, config=config)
                errors[f"out(exp/{split})"] = relative_error(split_out, out_ref)
        default = KERNELS["attention-bwd"].default_config(problem)
        for label, config in (("", default), ("atomic ", replace(default, dq_atomic=True)),
                              ("1launch ", replace(default, one_launch=True))):
            q, k, v = case.leaves()
            ours = attention(q, k, v, causal=causal, window=window, backward_config=config)
            grads = torch.autograd.grad(ours, (q, k, v), case.do)
            for name, got, want in zip(("dq", "dk", "dv"), grads, grads_ref):
                errors[label + name] = relative_error(got, want)
        unwritten = int(out.isnan().sum() + lse.isnan().sum())
        fwd_tol, grad_tol = TOLERANCE[dtype]
        ok = (all(errors[n] <= fwd_tol for n in errors if n.startswith("out")) and errors["lse"] <= 1e-3 and unwritten == 0
              and all(errors[g] <= grad_tol for g in errors if g[-2:] in ("dq", "dk", "dv")))
        peer = ""
        if _square_only(problem) and problem.group_size == 1:
            sdpa = _sdpa("FLASH_ATTENTION")(case.q, case.k, case.v, causal)
            peer = f" (sdpa_flash out {relative_error(sdpa, out_ref):.1e})"
        all_ok &= ok
        print(f"  {'ok  ' if ok else 'FAIL'} {problem.describe():55s} "
              + " ".join(f"{name} {value:.1e}" for name, value in errors.items())
              + f" unwritten {unwritten}{peer}")
        rows.append(dict(kind="check", backend="einsim", N=nq, D=d, causal=int(causal), ms=0,
                         tflops=0, tbps=0, note=("ok " if ok else "FAIL ") + problem.describe()
                         + " " + " ".join(f"{n}={e:.2e}" for n, e in errors.items())))
    return all_ok


# -- sweeps: candidate configs of ours, to pick the defaults -----------------------------------
FORWARD_SWEEP = [
    # D = 64 candidates (filtered by check_config for other dims)
    FlashConfig(128, 64, 4, 3), FlashConfig(128, 128, 4, 3), FlashConfig(128, 128, 4, 2),
    FlashConfig(256, 64, 8, 3), FlashConfig(128, 64, 4, 4), FlashConfig(128, 32, 4, 4),
    FlashConfig(64, 64, 4, 4), FlashConfig(64, 128, 4, 3), FlashConfig(64, 64, 4, 3),
    # D = 128 candidates
    FlashConfig(128, 128, 8, 3), FlashConfig(128, 128, 8, 3, warp_specialize=True),
    FlashConfig(128, 64, 8, 4, warp_specialize=True), FlashConfig(256, 64, 8, 2),
    # part of the exponentials on the FMA units
    FlashConfig(128, 128, 4, 3, exp_split=2), FlashConfig(128, 128, 4, 3, exp_split=4),
    FlashConfig(64, 128, 4, 3, exp_split=2), FlashConfig(64, 128, 4, 3, exp_split=4),
    FlashConfig(128, 64, 4, 3, exp_split=4), FlashConfig(128, 128, 8, 3, exp_split=2),
    FlashConfig(128, 128, 8, 3, exp_split=4),
]
SWEEP_SETS = {
    # --sweep-set exp: only the configs that test the FMA exponentials, with their baselines
    "exp": lambda config: config.exp_split > 1 or config in (
        FlashConfig(128, 128, 4, 3), FlashConfig(64, 128, 4, 3), FlashConfig(128, 64, 4, 3),
        FlashConfig(128, 128, 8, 3)),
}
BACKWARD_SWEEP = [
    FlashBackwardConfig(64, 128, 128, 64, 8, 3), FlashBackwardConfig(64, 64, 64, 64, 4, 2),
    FlashBackwardConfig(64, 128, 64, 64, 8, 3), FlashBackwardConfig(32, 128, 128, 64, 8, 3),
    FlashBackwardConfig(64, 128, 0 + 128, 64, 8, 2, dq_atomic=True),
    FlashBackwardConfig(64, 128, 128, 64, 8, 3, dq_atomic=True),
    FlashBackwardConfig(64, 64, 128, 64, 4, 2, dq_atomic=True),
    FlashBackwardConfig(32, 128, 128, 64, 8, 3, dq_atomic=True),
    FlashBackwardConfig(128, 128, 128, 64, 8, 2, dq_atomic=True),
]


def profile_backward(shapes: list[Problem]) -> None:
    """Time of each kernel of our backward (and FlexAttention's) at the default configs."""
    from torch.profiler import ProfilerActivity, profile

    for problem in shapes:
        case = Case.make(problem)
        for name, build in (("einsim", ours_backward), ("flex", flex_backward)):
            fn = build(case)
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
            totals = {}
            for event in prof.events():
                if str(event.device_type).endswith("CUDA"):
                    time_us = getattr(event, "device_time", None)
                    if time_us is None:
                        time_us = event.cuda_time
                    totals[event.name] = totals.get(event.name, 0.0) + time_us / 5
            parts = ", ".join(f"{k[:40]} {v / 1000:.3f} ms" for k, v in
                              sorted(totals.items(), key=lambda kv: -kv[1])[:5])
            print(f"  backward kernels {name:6s} {problem.describe()}: {parts}", flush=True)


def run_sweep(kinds: list[str], shapes: list[Problem], rows: list[dict],
              keep=lambda config: True) -> None:
    for kind in kinds:
        name, sweep, build = (("attention-fwd", FORWARD_SWEEP, ours_forward) if kind == "fwd"
                              else ("attention-bwd", BACKWARD_SWEEP, ours_backward))
        spec = KERNELS[name]
        for problem in shapes:
            case = Case.make(problem)
            results = []
            for config in sweep:
                if not keep(config):
                    continue
                if time.time() > DEADLINE[0]:
                    print("  (time budget spent: rest of the sweep skipped)")
                    break
                reasons = spec.config_reasons(config, problem)
                if reasons:
                    print(f"  skip {config}: {'; '.join(reasons)}")
                    continue
                try:
                    started = time.time()
                    ms = time_ms(build(case, config))
                    wall = time.time() - started
                except Exception as error:  # a config the compiler rejects is a result too
                    print(f"  {name} {config}: {type(error).__name__}: {str(error)[:200]}")
                    continue
                tflops = flops(problem, "backward" if kind == "bwd" else "prefill") / ms / 1e9
                results.append((ms, config))
                launched = ", ".join(f"{k.removeprefix('attention-')}: smem {v['shared']} regs "
                                     f"{v['registers']} spills {v['spills']}"
                                     for k, v in LAST_LAUNCH.items() if k.startswith(name))
                print(f"  sweep {name} {problem.describe():45s} {ms:8.3f} ms {tflops:6.1f} TFLOP/s"
                      f"  {config}  model smem {spec.shared_memory_bytes(config, problem)}; "
                      f"{launched} ({wall:.1f}s)", flush=True)
                rows.append(dict(kind=f"sweep-{kind}", backend=str(config), N=problem.q_len,
                                 D=problem.head_dim, causal=int(problem.causal), ms=ms,
                                 tflops=tflops, tbps=0, note=""))
            if results:
                best_ms, best = min(results, key=lambda r: r[0])
                default = spec.default_config(problem)
                print(f"  best {name} {problem.describe()}: {best} {best_ms:.3f} ms; default is "
                      f"{default}", flush=True)


# -- the comparison --------------------------------------------------------------------------
def shapes_for(lengths, dims, causal_modes, dtype="bf16"):
    for d in dims:
        for causal in causal_modes:
            for n in lengths:
                yield Problem(batch=max(1, TOKENS // n), q_heads=HIDDEN // d,
                                       kv_heads=HIDDEN // d, q_len=n, kv_len=n, head_dim=d,
                                       causal=causal, dtype=dtype)


def run_comparison(problems, kinds, rows: list[dict], skip=()) -> None:
    print(f"\n{'kind':8s} {'backend':11s} {'N':>6s} {'D':>4s} {'causal':>6s} {'ms':>9s} "
          f"{'TFLOP/s':>8s} {'TB/s':>6s}  ratios (peer ms / ours ms)")
    for problem in problems:
        case = Case.make(problem)
        for kind in kinds:
            ours_ms = None
            measured = []
            for variant in VARIANTS:
                if time.time() > DEADLINE[0]:
                    print("  (time budget spent: skipped)")
                    break
                if variant.kind != kind or not variant.applies(problem) or variant.backend in skip:
                    continue
                try:
                    ms = time_ms(variant.build(case))
                except Exception as error:
                    print(f"  {variant.backend} {kind} {problem.describe()}: "
                          f"{type(error).__name__}: {str(error)[:300]}")
                    traceback.print_exc(limit=2)
                    continue
                if variant.ours:
                    ours_ms = ms
                measured.append((variant, ms))
            for variant, ms in measured:
                tflops = flops(problem, kind) / ms / 1e9
                tbps = min_bytes(problem, kind) / ms / 1e9
                ratio = "" if variant.ours or ours_ms is None else f"{ms / ours_ms:.3f}"
                print(f"{kind:8s} {variant.backend:11s} {problem.q_len:6d} {problem.head_dim:4d} "
                      f"{int(problem.causal):6d} {ms:9.3f} {tflops:8.1f} {tbps:6.2f}  "
                      + (f"x{ratio} vs ours" if ratio else ""), flush=True)
                rows.append(dict(kind=kind, backend=variant.backend, N=problem.q_len,
                                 D=problem.head_dim, causal=int(problem.causal), ms=ms,
                                 tflops=tflops, tbps=tbps,
                                 note=f"peer/ours={ratio}" if ratio else ""))
        del case
        torch.cuda.empty_cache()


def summarise(rows: list[dict]) -> None:
    """Ours against each peer at every shape: peer_ms / ours_ms (> 1: ours is faster)."""
    table = {}
    for row in rows:
        if row["kind"] in ("prefill", "backward"):
            table[(row["kind"], row["N"], row["D"], row["causal"], row["backend"])] = row["ms"]
    peers = sorted({key[4] for key in table} - {"einsim"})
    print("\nsummary: ours TFLOP/s and speed-up over each peer (peer ms / ours ms)")
    print(f"{'kind':8s} {'N':>6s} {'D':>4s} {'causal':>6s} {'ours':>8s} " + " ".join(f"{p:>11s}" for p in peers))
    for (kind, n, d, causal, backend), ms in sorted(table.items()):
        if backend != "einsim":
            continue
        tflops = next(r["tflops"] for r in rows if r["kind"] == kind and r["N"] == n
                      and r["D"] == d and r["causal"] == causal and r["backend"] == "einsim")
        cells = []
        for peer in peers:
            peer_ms = table.get((kind, n, d, causal, peer))
            cells.append(f"{peer_ms / ms:11.3f}" if peer_ms else f"{'-':>11s}")
        print(f"{kind:8s} {n:6d} {d:4d} {causal:6d} {tflops:8.1f} " + " ".join(cells))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 4k and 16k only")
    parser.add_argument("--lengths", nargs="*", default=None, help="sequence lengths, e.g. 1k,4k,16k or 1024 4096")
    parser.add_argument("--dims", type=int, nargs="*", default=[64, 128])
    parser.add_argument("--causal", choices=("both", "yes", "no"), default="both")
    parser.add_argument("--kinds", default="prefill,backward")
    parser.add_argument("--skip", default="", help="comma-separated backends not to time")
    parser.add_argument("--sweep", default="", help="fwd,bwd: time candidate configs at N=16k")
    parser.add_argument("--sweep-set", default=None, choices=sorted(SWEEP_SETS),
                        help="sweep only this subset of the candidate configs")
    parser.add_argument("--profile-backward", action="store_true",
                        help="per-kernel times of our backward and FlexAttention's at N=16k")
    parser.add_argument("--no-check", action="store_true")
    parser.add_argument("--no-compare", action="store_true")
    default_csv = os.path.join(os.environ["OUT"], "attention.csv") if os.environ.get("OUT") else None
    parser.add_argument("--csv", default=default_csv)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop sweeping/timing after this many seconds (results so far kept)")
    args = parser.parse_args(argv)
    try:
        args.lengths = parse_lengths(args.lengths, "--lengths") if args.lengths else None
    except ShapeError as error:
        parser.error(str(error))
    if args.budget_s:
        DEADLINE[0] = time.time() + args.budget_s

    if not torch.cuda.is_available():
        print("bench_attention: needs a CUDA GPU (run it through the device tool)", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    started = time.time()
    rows: list[dict] = []
    ok = True
    if not args.no_check:
        ok = run_checks(rows)
        print(f"checks done in {time.time() - started:.0f}s", flush=True)
    causal_modes = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    if args.sweep:
        shapes = list(shapes_for([16384], args.dims, causal_modes))
        run_sweep([s for s in args.sweep.split(",") if s], shapes, rows,
                  keep=SWEEP_SETS.get(args.sweep_set, lambda config: True))
        print(f"sweeps done at {time.time() - started:.0f}s", flush=True)
    if args.profile_backward:
        profile_backward(list(shapes_for([16384], args.dims, causal_modes)))
    if not args.no_compare:
        lengths = args.lengths or ([4096, 16384] if args.quick else [1024, 2048, 4096, 8192, 16384])
        run_comparison(list(shapes_for(lengths, args.dims, causal_modes)),
                       [k for k in args.kinds.split(",") if k], rows,
                       skip=tuple(s for s in args.skip.split(",") if s))
        summarise(rows)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["kind", "backend", "N", "D", "causal", "ms",
                                                        "tflops", "tbps", "note"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    print(f"total {time.time() - started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
