"""Decode on the GPU: our split-KV kernel (`decode`) against torch SDPA's flash, cuDNN and
memory-efficient backends, q_len = 1 against KV caches of 4k..64k, checked before timed.

    python benchmarks/bench_decode.py --csv decode.csv [--variants] [--kv 4096 16384 65536]

Shapes: the anchors' (../shared/anchors/h100-peers.csv, decode rows: batch 16 x 16 heads,
D = 128, MHA, bf16) plus a GQA model (batch 4, 32 query heads on 8 KV heads). TB/s counts
the compulsory bytes (Q, K, V, O, lse once: `Problem.forward_min_bytes`), the same
bytes the anchors' TB/s count. Prints a table and writes CSV.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from einsim.einsum_cascades.reference import attention_reference_torch
from einsim.kernels.decode import config as cfg
from einsim.kernels.decode.forward import decode_attention
from einsim.problem import Problem
from einsim.kernels.limits import DeviceLimits
from einsim.kernels.registry import make_attention_inputs

PEERS = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION",
         "sdpa_efficient": "EFFICIENT_ATTENTION"}


def shapes(kv_lengths):
    for kv_len in kv_lengths:
        yield "anchor", Problem(batch=16, q_heads=16, kv_heads=16, q_len=1, kv_len=kv_len,
                                         head_dim=128)
    for kv_len in kv_lengths:
        if kv_len >= 16384:
            yield "gqa", Problem(batch=4, q_heads=32, kv_heads=8, q_len=1, kv_len=kv_len,
                                          head_dim=128)


def variants(problem, limits, all_variants):
    default = cfg.default_config(problem)
    found = [("default", default)]
    if all_variants:
        for name, changes in (
            ("tma", dict(USE_TMA=True)),
            ("n128", dict(BLOCK_N=128)),
            ("n128-tma", dict(BLOCK_N=128, USE_TMA=True)),
            ("n128-s4-tma", dict(BLOCK_N=128, num_stages=4, USE_TMA=True)),
            ("stages4", dict(num_stages=4)),
            ("stages2", dict(num_stages=2)),
            ("warps8", dict(num_warps=8)),
            ("warps8-n128", dict(num_warps=8, BLOCK_N=128)),
            ("warps8-s4", dict(num_warps=8, num_stages=4)),
            ("splits2x", dict(NUM_SPLITS=2 * cfg.choose_num_splits(problem, default, limits))),
            ("splits-half", dict(NUM_SPLITS=max(1, cfg.choose_num_splits(problem, default, limits) // 2))),
        ):
            config = dataclasses.replace(default, **changes)
            if not cfg.check_config(config, problem, limits):
                found.append((name, config))
    return found


def time_ms(fn) -> tuple[float, float]:
    """(GPU time replayed from a CUDA graph, time of eager calls): the first is the kernels' own
    time, the second includes each call's host overhead (a decode step is usually replayed from
    a graph). Medians."""
    eager = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    try:
        graph = triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")
    except Exception as error:  # not capturable: report eager time only
        print(f"  (no CUDA graph: {type(error).__name__}: {str(error)[:120]})")
        graph = float("nan")
    return graph, eager


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--csv", default=None, help="write the rows here too")
    parser.add_argument("--variants", action="store_true", help="time config variants too")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_decode: needs a CUDA GPU", file=sys.stderr)
        return 2
    limits = DeviceLimits.from_torch_device()
    rows = []
    header = ("shape", "kv_len", "backend", "config", "splits", "graph_ms", "eager_ms", "tbps",
              "vs_cudnn", "max_err")
    print(" ".join(f"{h:>12}" for h in header))
    for label, problem in shapes(args.kv):
        inputs = make_attention_inputs(problem, device="cuda", seed=0)
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        ref_out, ref_lse = attention_reference_torch(q, k, v, dtype=torch.float32)
        nbytes = problem.forward_min_bytes()
        measured = []
        for name, backend in PEERS.items():
            backend = getattr(SDPBackend, backend)
            gqa = problem.q_heads != problem.kv_heads

            def peer(backend=backend, gqa=gqa):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            try:
                err = (peer().float() - ref_out).abs().max().item()
                measured.append((name, "-", "-", time_ms(peer), err))
            except RuntimeError as error:  # backend unavailable for this shape
                print(f"  {name} skipped at {problem.describe()}: {str(error).splitlines()[0]}")
        for name, config in variants(problem, limits, args.variants):
            try:
                out, lse = decode_attention(q, k, v, config=config, limits=limits)
            except Exception as error:  # a variant that does not compile must not end the run
                print(f"  ours/{name} failed: {type(error).__name__}: {str(error)[:300]}")
                continue
            err = max((out.float() - ref_out).abs().max().item(),
                      (lse - ref_lse).abs().max().item())
            if err > 3e-2:
                print(f"  ours/{name} WRONG at {problem.describe()}: max error {err:.3g}")
            splits = cfg.split_plan(problem, config, limits).num_splits
            ms = time_ms(lambda config=config: decode_attention(q, k, v, config=config, limits=limits))
            measured.append(("ours", name, splits, ms, err))
        cudnn = next((m[3][0] for m in measured if m[0] == "sdpa_cudnn"), float("nan"))
        for backend, name, splits, (graph, eager), err in measured:
            ms = graph if graph == graph else eager  # TB/s and ratios from the GPU time
            row = (label, problem.kv_len, backend, name, splits, round(graph, 4), round(eager, 4),
                   round(nbytes / ms / 1e9, 3), round(cudnn / ms, 3), f"{err:.2e}")
            rows.append(row)
            print(" ".join(f"{str(x):>12}" for x in row), flush=True)
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
