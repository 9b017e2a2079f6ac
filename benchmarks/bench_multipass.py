"""The 2-pass and 3-pass forward kernels on the GPU next to the fused 1-pass one and SDPA flash:
time, and the HBM bytes each moves (predicted by the cascade, and measured by Nsight Compute).

    python benchmarks/bench_multipass.py --csv multipass.csv [--n 1024 4096 16384]
    ncu --metrics dram__bytes_read.sum,dram__bytes_write.sum --csv \\
        python benchmarks/bench_multipass.py --profile-once     # one launch of each kernel

Shapes follow the forward anchors: batch x N = 16k tokens, 16 heads of D = 128, bf16. TFLOP/s
counts the attention's own FLOPs (the multi-pass kernels recompute QK, which is not credited).
`cascade_GB` is `hbm_bytes` (each pass streams K/V once per KV head); `requested_GB` is every
byte the programs ask for (K/V again per query tile); DRAM traffic lies between the two.
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

from einsim.errors import ShapeError
from einsim.kernels.multipass import config as mp
from einsim.problem import Problem
from einsim.shapes import parse_lengths
from einsim.kernels.registry import KERNELS, make_attention_inputs

OURS = ("attention-fwd", "attention-2pass-fwd", "attention-3pass-fwd")
MATERIALIZE_UP_TO = 4096  # materialized QK/SLNV grow as N^2: keep the run short


def time_ms(fn) -> float:
    """Median of eager calls (each call is long enough that host overhead does not show)."""
    return triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")


def problems(lengths, causal_modes):
    for n in lengths:
        for causal in causal_modes:
            yield Problem(batch=max(1, 16384 // n), q_heads=16, kv_heads=16, q_len=n,
                                   kv_len=n, head_dim=128, causal=causal)


def configs(spec, problem):
    """(label, config) pairs to run: the default, and for multi-pass kernels both mappings."""
    default = spec.default_config(problem)
    if getattr(spec, "passes", 1) not in (2, 3):
        return [("default", default)]
    found = [("recompute", dataclasses.replace(default, MATERIALIZE=False))]
    if problem.q_len <= MATERIALIZE_UP_TO:
        found.append(("materialize", dataclasses.replace(default, MATERIALIZE=True)))
    return found


def profile_once() -> int:
    """One launch of every multi-pass and decode kernel at one shape each, for ncu."""
    from einsim.kernels.decode.forward import decode_attention

    problem = Problem(batch=4, q_heads=16, kv_heads=16, q_len=4096, kv_len=4096, head_dim=128)
    inputs = make_attention_inputs(problem, device="cuda")
    for name in OURS[1:]:
        spec = KERNELS[name]
        for label, config in configs(spec, problem):
            spec.launch(config, inputs)
            torch.cuda.synchronize()
            cascade = spec.pass_traffic(problem, config)
            requested = mp.pass_traffic(problem, config, spec.passes, reuse=False)
            print(f"{name} {label} {problem.describe()} {config}: predicted MB per pass (cascade) "
                  + ", ".join(f"{t.total / 1e6:.1f}" for t in cascade)
                  + "; requested " + ", ".join(f"{t.total / 1e6:.1f}" for t in requested))
    decode = Problem(batch=16, q_heads=16, kv_heads=16, q_len=1, kv_len=16384, head_dim=128)
    inputs = make_attention_inputs(decode, device="cuda")
    decode_attention(inputs["q"], inputs["k"], inputs["v"])
    spec = KERNELS["decode"]
    traffic = spec.pass_traffic(decode, spec.default_config(decode))
    print(f"decode {decode.describe()}: predicted " + ", ".join(f"{t.total / 1e6:.1f} MB" for t in traffic))
    torch.cuda.synchronize()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", nargs="+", default=["1k,4k,16k"], help="sequence lengths, e.g. 1k,4k,16k or 1024 4096")
    parser.add_argument("--causal", choices=("both", "no", "yes"), default="both")
    parser.add_argument("--csv", default=None)
    parser.add_argument("--profile-once", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.n = parse_lengths(args.n, "--n")
    except ShapeError as error:
        parser.error(str(error))
    if not torch.cuda.is_available():
        print("bench_multipass: needs a CUDA GPU", file=sys.stderr)
        return 2
    if args.profile_once:
        return profile_once()
    causal_modes = {"both": (False, True), "no": (False,), "yes": (True,)}[args.causal]
    header = ("N", "causal", "kernel", "ms", "tflops", "vs_1pass", "cascade_GB", "requested_GB",
              "cascade_TBps", "max_err")
    print(" ".join(f"{h:>13}" for h in header))
    rows = []
    for problem in problems(args.n, causal_modes):
        inputs = make_attention_inputs(problem, device="cuda")
        q, k, v = inputs["q"], inputs["k"], inputs["v"]
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            def sdpa():
                return F.scaled_dot_product_attention(q, k, v, is_causal=problem.causal)
            expected = sdpa()
            measured = [("sdpa_flash", time_ms(sdpa), 0.0, None, None)]
        for name in OURS:
            spec = KERNELS.get(name)
            if spec is None:
                continue
            for label, config in configs(spec, problem):
                try:
                    out, _ = spec.launch(config, inputs)
                except Exception as error:  # a family not built yet, or a failed compile
                    print(f"  {name} {label} skipped: {type(error).__name__}: {str(error)[:300]}")
                    continue
                err = (out.float() - expected.float()).abs().max().item()
                del out
                ms = time_ms(lambda spec=spec, config=config: spec.launch(config, inputs))
                predicted = requested = None
                if getattr(spec, "passes", 1) in (2, 3):
                    predicted = mp.hbm_bytes(problem, config, spec.passes)
                    requested = mp.requested_bytes(problem, config, spec.passes)
                tag = name if label == "default" else f"{name}/{label}"
                measured.append((tag, ms, err, predicted, requested))
        one_pass = next((m[1] for m in measured if m[0] == "attention-fwd"), float("nan"))
        for name, ms, err, predicted, requested in measured:
            row = (problem.q_len, int(problem.causal), name, round(ms, 3),
                   round(problem.forward_flops() / ms / 1e9, 1), round(ms / one_pass, 2),
                   round(predicted / 1e9, 3) if predicted else "-",
                   round(requested / 1e9, 3) if requested else "-",
                   round(predicted / ms / 1e9, 2) if predicted else "-", f"{err:.2e}")
            rows.append(row)
            print(" ".join(f"{str(x):>13}" for x in row), flush=True)
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
