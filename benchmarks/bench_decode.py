"""Decode on the GPU, serving-shaped: einsim's split-KV decode (`decode`, dense cache) and
serving decode (`decode-paged`: per-sequence lengths, paged or contiguous cache, stream-K split)
against torch SDPA's cuDNN and flash backends, checked before timed, repeated to show spread.

    python benchmarks/bench_decode.py [--csv decode.csv] [--repeats 5] [--quick]

Cases (bf16, GQA 32 query heads on 8 KV heads, D = 128, the Llama-3 8B/70B head layout): batch 1
with 4k, 32k and 128k caches; batch 64 with 4k caches; batch 64 with unequal lengths (256 to
16k, log-uniform, fixed seed); batch 64 with 4 query tokens (speculative decoding) on 4k. Each
backend is timed `--repeats` times, interleaved with the others, over enough copies of the cache
that every call reads from HBM (> 4x the L2): eager (host launch cost included, as a serving loop
without graphs pays it) and replayed from a CUDA graph (the GPU's time alone). Reported: the
median, the spread (max - min) / median of the repeats, TB/s of the compulsory bytes (Q, the
visible K/V of each sequence, O; what peers' TB/s count), and ratios to cuDNN in the same mode.
SDPA has no per-sequence lengths: on unequal lengths it runs the batch padded to the longest
(marked `padded`), which is what a user without a varlen kernel does. FlashInfer's decode is not
here: its wheel cannot be installed on the lent GPU machine (no network, and too large to carry).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import statistics
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from einsim.autotune.timing import warm_up_gpu  # noqa: E402
from einsim.einsum_cascades.reference import attention_reference_torch  # noqa: E402
from einsim.kernels.decode import config as cfg  # noqa: E402
from einsim.kernels.decode.forward import decode_attention, decode_paged  # noqa: E402
from einsim.problem import Problem  # noqa: E402

Q_HEADS, KV_HEADS, HEAD_DIM, PAGE_SIZE = 32, 8, 128, 16


@dataclass
class Case:
    label: str
    batch: int
    lengths: list[int]
    q_len: int = 1


def cases(quick: bool) -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    unequal = [int(2 ** (8 + 6 * float(u))) for u in torch.rand(64, generator=generator)]
    found = [Case("B1-4k", 1, [4096]), Case("B1-32k", 1, [32768]), Case("B1-128k", 1, [131072]),
             Case("B64-4k", 64, [4096] * 64), Case("B64-unequal", 64, unequal),
             Case("B64-4k-spec4", 64, [4096] * 64, q_len=4)]
    return [c for c in found if not quick or c.label in ("B1-128k", "B64-4k", "B64-unequal")]


class Inputs:
    """`copies` sets of (q, dense k/v, paged k/v, block table, lengths) for one case."""

    def __init__(self, case: Case, copies: int) -> None:
        capacity = max(case.lengths)
        problem = Problem(batch=case.batch, q_heads=Q_HEADS, kv_heads=KV_HEADS, q_len=case.q_len,
                          kv_len=capacity, head_dim=HEAD_DIM, causal=case.q_len > 1)
        self.problem = problem
        self.sets = [cfg.make_paged_inputs(problem, device="cuda", page_size=PAGE_SIZE,
                                           cache_seqlens=case.lengths, dense=dense(problem, seed))
                     for seed in range(copies)]
        visible_kv = sum(case.lengths) * KV_HEADS * HEAD_DIM * 2 * 2
        q_and_out = 2 * case.batch * Q_HEADS * case.q_len * HEAD_DIM * 2
        self.bytes = visible_kv + q_and_out


def dense(problem: Problem, seed: int) -> dict:
    """q, k, v drawn on the GPU (the CPU would take seconds for a 64 x 16k cache)."""
    generator = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device="cuda", dtype=torch.bfloat16)
    p = problem
    return {"q": randn(p.batch, p.q_heads, p.q_len, p.head_dim),
            "k": randn(p.batch, p.kv_heads, p.kv_len, p.head_dim),
            "v": randn(p.batch, p.kv_heads, p.kv_len, p.v_head_dim)}


PAGED_VARIANTS = {  # --variants: configs of decode-paged timed beside its default
    "n64-s3": cfg.PagedDecodeConfig(BLOCK_N=64, num_warps=4, num_stages=3),
    "n128-s2": cfg.PagedDecodeConfig(BLOCK_N=128, num_warps=4, num_stages=2),
    "n128-w8": cfg.PagedDecodeConfig(BLOCK_N=128, num_warps=8, num_stages=3),
    "n64-s4": cfg.PagedDecodeConfig(BLOCK_N=64, num_warps=4, num_stages=4),
    "per-key": cfg.PagedDecodeConfig(PER_KEY_PAGES=True),
    "n64-s4-per-key": cfg.PagedDecodeConfig(BLOCK_N=64, num_warps=4, num_stages=4, PER_KEY_PAGES=True),
}


SPLITKV_VARIANTS = {  # --variants: changes to the split-KV decode's default config
    "tma": dict(USE_TMA=True),
    "s4": dict(num_stages=4),
    "w8": dict(num_warps=8),
    # 64-key tiles: half the shared memory per stage, two programs per SM instead of one (at
    # batch 64 x 8 KV heads the 512 programs of 128-key tiles run one per SM, 3.9 waves)
    "n64-s3": dict(BLOCK_N=64, num_stages=3),
    "n64-s4": dict(BLOCK_N=64, num_stages=4),
    "tma-n64-s4": dict(USE_TMA=True, BLOCK_N=64, num_stages=4),
    "splits2": dict(NUM_SPLITS=2),
}


def backends(case: Case, inputs: Inputs, variants: str = ""):
    """(name, note, fn(set) -> out) for every backend that can run the case."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    uniform = len(set(case.lengths)) == 1
    causal = case.q_len > 1
    found = [("einsim-paged", f"page {PAGE_SIZE}",
              lambda s: decode_paged(s["q"], s["k_cache"], s["v_cache"], s["cache_seqlens"],
                                     s["block_table"], causal=causal)[0])]
    wanted = set(variants.split(",")) if variants and variants != "all" else None

    def chosen(table):
        return [(label, value) for label, value in table.items()
                if variants and (wanted is None or label in wanted)]

    for label, config in chosen(PAGED_VARIANTS):
        found.append((f"einsim-paged-{label}", f"page {PAGE_SIZE}",
                      lambda s, c=config: decode_paged(s["q"], s["k_cache"], s["v_cache"],
                                                       s["cache_seqlens"], s["block_table"],
                                                       causal=causal, config=c)[0]))
    found.append(("einsim-varlen", "contiguous",
                  lambda s: decode_paged(s["q"], s["k"], s["v"], s["cache_seqlens"], causal=causal)[0]))
    if uniform:
        found.append(("einsim-splitkv", "dense",
                      lambda s: decode_attention(s["q"], s["k"], s["v"], causal=causal)[0]))
        default = cfg.default_config(inputs.problem)
        for label, changes in chosen(SPLITKV_VARIANTS):
            config = dataclasses.replace(default, **changes)
            found.append((f"einsim-splitkv-{label}", "dense",
                          lambda s, c=config: decode_attention(s["q"], s["k"], s["v"], causal=causal,
                                                               config=c)[0]))
    note = "dense" if uniform else "padded"
    for name, backend in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION),
                          ("sdpa-flash", SDPBackend.FLASH_ATTENTION)):
        def sdpa(s, backend=backend):
            with sdpa_kernel(backend):
                # SDPA's is_causal is top-left aligned; bottom-right causal for q_len > 1 needs
                # a mask no fast backend takes: peers time the unmasked call (same bytes).
                return F.scaled_dot_product_attention(s["q"], s["k"], s["v"], enable_gqa=True)
        found.append((name, note, sdpa))
    return found


def check(name: str, fn, inputs: Inputs, case: Case) -> float:
    """Max |out - reference| over the sequences (bottom-right causal for several tokens)."""
    s = inputs.sets[0]
    out = fn(s)
    torch.cuda.synchronize()
    causal = case.q_len > 1 and name.startswith("einsim")
    error = 0.0
    for b, length in enumerate(case.lengths[:8]):
        lengths = length if name.startswith("einsim") else max(case.lengths)
        ref, _ = attention_reference_torch(s["q"][b:b + 1], s["k"][b:b + 1, :, :lengths],
                                           s["v"][b:b + 1, :, :lengths], causal=causal,
                                           dtype=torch.float32)
        error = max(error, (out[b:b + 1].float() - ref).abs().max().item())
    return error


def time_eager(fn, sets, calls: int) -> float:
    """ms per call, calls issued back to back over the copies (host cost included)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for s in sets:
        fn(s)
    torch.cuda.synchronize()
    start.record()
    for i in range(calls):
        fn(sets[i % len(sets)])
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def make_graph(fn, sets):
    """A CUDA graph that calls fn once on every copy (captured on a side stream)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for s in sets:
            fn(s)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for s in sets:
            fn(s)
    return graph


def time_graph(graph, per_replay: int, replays: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    torch.cuda.synchronize()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (replays * per_replay)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="write rows here (default $OUT/decode.csv if OUT is set)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="three cases only")
    parser.add_argument("--variants", nargs="?", const="all", default="",
                        help="also time config variants: all, or a comma-separated list of their labels "
                        f"({', '.join(list(PAGED_VARIANTS) + list(SPLITKV_VARIANTS))})")
    parser.add_argument("--cases", help="comma-separated case labels to run (default: all)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_decode: needs a CUDA GPU", file=sys.stderr)
        return 2
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    warm_up_gpu(1.0)  # clocks out of idle before the first backend's first repeat
    header = ("case", "backend", "note", "mode", "ms_median", "spread_pct", "tbps", "vs_cudnn",
              "max_err", "repeats")
    rows = []
    path = args.csv or (os.path.join(os.environ["OUT"], "decode.csv") if os.environ.get("OUT") else None)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(" ".join(f"{h:>13}" for h in header))
    chosen = cases(args.quick)
    if args.cases:  # in the order given: the most wanted first, if the run is cut short
        by_label = {c.label: c for c in cases(False)}
        chosen = [by_label[label] for label in args.cases.split(",") if label in by_label]
    for case in chosen:
        try:
            per_copy = sum(case.lengths) * KV_HEADS * HEAD_DIM * 2 * 2
            copies = max(1, min(16, math.ceil(4 * l2 / per_copy)))
            inputs = Inputs(case, copies)
        except Exception as error:  # out of memory and the like: next case
            print(f"{case.label}: inputs failed: {type(error).__name__}: {error}")
            continue
        measured = {}
        runnable = []
        for name, note, fn in backends(case, inputs, args.variants):
            try:
                error = check(name, fn, inputs, case)
                graph = make_graph(fn, inputs.sets)
                runnable.append((name, note, fn, graph, error))
            except Exception as error:
                print(f"  {case.label}/{name} skipped: {type(error).__name__}: "
                      f"{str(error).splitlines()[0][:200] if str(error) else ''}")
        for _ in range(args.repeats):  # interleaved, so drift hits every backend alike
            for name, note, fn, graph, _error in runnable:
                calls = max(20, 200 // len(inputs.sets)) * len(inputs.sets)
                measured.setdefault((name, "eager"), []).append(time_eager(fn, inputs.sets, calls))
                measured.setdefault((name, "graph"), []).append(
                    time_graph(graph, len(inputs.sets), max(5, 100 // len(inputs.sets))))
        for mode in ("eager", "graph"):
            cudnn = measured.get(("sdpa-cudnn", mode))
            for name, note, _fn, _graph, error in runnable:
                times = measured[(name, mode)]
                median = statistics.median(times)
                row = (case.label, name, note, mode, round(median, 4),
                       round(100 * (max(times) - min(times)) / median, 2),
                       round(inputs.bytes / (median * 1e-3) / 1e12, 3),
                       round(statistics.median(cudnn) / median, 3) if cudnn else "-",
                       f"{error:.2e}", len(times))
                rows.append(row)
                print(" ".join(f"{str(x):>13}" for x in row), flush=True)
        if path:
            with open(path, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(rows)
        del inputs
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        raise SystemExit(1)
