"""Compiled cascades whose filters read data — packed documents and block-sparse — timed on the GPU
at several densities, to validate the GPU cost model's pricing of the tiles such filters empty
(docs/validation.md § Filters that read data).

    python benchmarks/bench_filters.py                      # the default cases at N = 16k
    python benchmarks/bench_filters.py --cases documents:1024,blocks:0.3 --length 4096
    python benchmarks/bench_filters.py --smoke              # checks only, tiny shapes (CPU: TRITON_INTERPRET=1)
    python benchmarks/bench_filters.py --cases blocks:0.3 --fwd-config 128,128,8,2   # the forward's tiles

The filter tensors are what einsim's statistical descriptions expand to (einsim.filter_inputs:
`documents:MEAN` for packed-documents' DQ, DK; `blocks:DENSITY` for block-sparse's BLOCKS), so the
model can be evaluated on exactly the same tensors from the CSV's `inputs` column. Each case is
checked against the cascade's torch twin (CompiledAttention.reference) at a small shape before any
timing. Timed (triton.testing.do_bench, median): the forward with the block mask built once
(`block_mask=`, FlexAttention's way), the forward building it per call (the default), the block
mask build alone (forward, dK/dV and dQ tile lists) and the backward with the prebuilt mask.
Rows: case, cascade, inputs, N, batch, heads, D, kind, ms, config, visited tiles, note.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import triton  # noqa: E402

from einsim.einsum_cascades.filter_values import filter_values  # noqa: E402
from einsim.filter_inputs import FilterInputs  # noqa: E402
from einsim.kernels import compile as compile_cascade  # noqa: E402
from einsim.problem import Problem  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASCADES = {"documents": "packed-documents", "blocks": "block-sparse"}
DEFAULT_CASES = "documents:1024,blocks:0.3,documents:256,documents:4096,blocks:0.1,blocks:0.6"
KINDS = ("fwd", "fwd_build_per_call", "build_fwd_lists", "build_all_lists", "bwd")
FIELDS = ["case", "cascade", "inputs", "N", "batch", "heads", "D", "kind", "ms", "config", "note"]


def tensors_for(compiled, problem: Problem, description: str) -> dict:
    """The filter tensors the description expands to for this call, on the device."""
    sizes = compiled.bind(problem)
    values = filter_values(compiled.cascade, sizes, FilterInputs.of(description))
    return {name: torch.as_tensor(array).to(DEVICE) for name, array in values.items()}


def qkv(problem: Problem, seed: int = 0):
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float16

    def randn(heads, length, dim):
        return torch.randn(problem.batch, heads, length, dim, device=DEVICE, dtype=dtype, generator=generator)
    return (randn(problem.q_heads, problem.q_len, problem.head_dim),
            randn(problem.kv_heads, problem.kv_len, problem.head_dim),
            randn(problem.kv_heads, problem.kv_len, problem.v_head_dim))


def check(compiled, description: str, length: int, head_dim: int, config=None) -> str:
    """Forward against the cascade's fp32 torch twin at a small shape (rows seeing no key: 0)."""
    problem = Problem(batch=2, q_heads=2, q_len=length, kv_len=length, head_dim=head_dim)
    q, k, v = qkv(problem, seed=1)
    extras = tensors_for(compiled, problem, description)
    out = compiled(q, k, v, config=config, **extras).float()
    want = compiled.reference(q.float(), k.float(), v.float(), **extras).float()
    error = ((out - want).norm() / want.norm().clamp_min(1e-6)).item()
    if not error < 2e-2:
        raise AssertionError(f"twin check at N={length}: relative error {error:.2e}")
    return f"twin rel err {error:.1e} at N={length}"


def time_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")


def run_case(case: str, args, rows: list[dict], deadline: float) -> None:
    kind, _, _ = case.partition(":")
    cascade = CASCADES.get(kind)
    if cascade is None:
        raise SystemExit(f"--cases {case}: expected documents:MEAN or blocks:DENSITY")
    compiled = compile_cascade(cascade)
    launch_config = args.fwd_config
    note = check(compiled, case, 300 if not args.smoke else 96, args.head_dim if not args.smoke else 32, launch_config)
    print(f"{case}: {note}", flush=True)
    base = dict(case=case, cascade=cascade, inputs=case, D=args.head_dim)
    if args.smoke:
        rows.append(dict(base, kind="check", ms=0, N=0, batch=0, heads=0, config="", note=note))
        return
    problem = Problem(batch=args.batch, q_heads=args.heads, q_len=args.length, kv_len=args.length,
                      head_dim=args.head_dim)
    q, k, v = qkv(problem)
    extras = tensors_for(compiled, problem, case)
    plan, ordered = compiled.plan(q, k, v, None, extras, launch_config)
    config = f"fwd {plan.forward_config} | bwd {plan.backward_config}"
    base.update(N=problem.q_len, batch=problem.batch, heads=problem.q_heads, config=config)
    mask = compiled.block_mask(q, k, v, config=launch_config, **extras)
    forward = plan.forward_config
    timings = [
        ("fwd", lambda: compiled(q, k, v, config=launch_config, block_mask=mask, **extras)),
        ("fwd_build_per_call", lambda: compiled(q, k, v, config=launch_config, **extras)),
        ("build_fwd_lists", lambda: compiled.tile_lists(plan, ordered, forward.BLOCK_M, forward.BLOCK_N,
                                                        device=q.device)),
        ("build_all_lists", lambda: compiled.block_mask(q, k, v, config=launch_config, **extras)),
    ]
    if "bwd" in args.kinds:
        leaves = tuple(t.detach().clone().requires_grad_(True) for t in (q, k, v))
        out = compiled(*leaves, config=launch_config, block_mask=mask, **extras)
        grad = torch.randn_like(out)
        timings.append(("bwd", lambda: torch.autograd.grad(out, leaves, grad, retain_graph=True)))
    for label, fn in timings:
        if label not in args.kinds:
            continue
        if time.time() > deadline:
            print(f"  (budget spent before {case} {label})", flush=True)
            return
        try:
            ms = time_ms(fn)
        except Exception as error:  # noqa: BLE001 - a failing measurement is a result; go on
            print(f"  {case} {label}: {type(error).__name__}: {str(error)[:300]}", flush=True)
            continue
        rows.append(dict(base, kind=label, ms=ms, note=""))
        write_csv(args.csv, rows)
        print(f"  {case:16s} N={problem.q_len} {label:20s} {ms:8.3f} ms", flush=True)


def _forward_config(parser, text):
    if text is None:
        return None
    from einsim.kernels.flash.config import FlashConfig

    try:
        block_m, block_n, warps, stages = (int(x) for x in text.split(","))
    except ValueError:
        parser.error(f"--fwd-config {text}: expected BLOCK_M,BLOCK_N,WARPS,STAGES, e.g. 128,128,8,2")
    return FlashConfig(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages)


def write_csv(path, rows: list[dict]) -> None:
    if not path:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated (default {DEFAULT_CASES})")
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"what to time (default {','.join(KINDS)})")
    parser.add_argument("--budget-s", type=float, default=math.inf, help="start nothing new after this")
    parser.add_argument("--csv", default=None)
    parser.add_argument("--smoke", action="store_true", help="the checks only, at tiny shapes")
    parser.add_argument("--fwd-config", default=None, metavar="BLOCK_M,BLOCK_N,WARPS,STAGES",
                        help="the forward's launch config instead of the kernel's default (W4: block-sparse's "
                             "default overflowed shared memory by 1 KiB on the H200)")
    args = parser.parse_args(argv)
    args.fwd_config = _forward_config(parser, args.fwd_config)
    args.kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds: unknown {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    if DEVICE != "cuda" and not args.smoke:
        print("bench_filters needs a CUDA GPU (or --smoke under TRITON_INTERPRET=1)")
        return 2
    deadline = time.time() + args.budget_s
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "none (smoke run)"
    print(f"GPU {gpu}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    rows: list[dict] = []
    for case in args.cases.split(","):
        if time.time() > deadline:
            print(f"(budget spent before {case})")
            break
        try:
            run_case(case, args, rows, deadline)
        except Exception as error:  # noqa: BLE001
            print(f"{case}: FAILED {type(error).__name__}: {error}", flush=True)
            traceback.print_exc()
            rows.append(dict(case=case, kind="check", ms=0, note=f"FAIL {error}"))
            write_csv(args.csv, rows)
    print("\ncase              kind                       ms")
    for row in rows:
        print(f"{row['case']:17s} {row['kind']:20s} {row['ms']:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
