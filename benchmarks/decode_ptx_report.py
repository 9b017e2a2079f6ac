"""Compile the decode kernels for sm_90 on any machine (no GPU: Triton's compiler and ptxas run
on the CPU) with the specialisation Triton's runtime would give real inputs (pointers and strides
divisible by 16, unit strides as constants), and count what matters for a memory-bound kernel:
asynchronous copies (the software pipeline), vector loads, scalar global loads, shared memory.

    python benchmarks/decode_ptx_report.py

Why: the lent GPU is scarce. W1 measured the serving decode at 2.0-2.9 TB/s where the split-KV
decode reached 4.2; this report showed the serving kernel pipelined one stage where the split-KV
kernel pipelines two (its block-table lookup fed each tile's loads), which the table read one
tile ahead fixed (same shared memory and cp.async count as the split-KV kernel).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402


def compile_stats(fn, pointers: dict, constants: dict, *, ones=(), divisible=(), floats=(),
                  num_warps=4, num_stages=3, arch=90) -> dict:
    """Compile `fn` for sm_<arch> and count its copies and loads."""
    values = dict(constants)
    values.update({name: 1 for name in ones})
    signature = {n: "constexpr" if n in values else pointers.get(n, "fp32" if n in floats else "i32")
                 for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in list(pointers) + list(divisible)}
    source = ASTSource(fn, signature, {(fn.arg_names.index(k),): v for k, v in values.items()}, attrs)
    started = time.time()
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = kernel.asm["ptx"]
    return {"compile_s": round(time.time() - started, 1), "cp_async": len(re.findall(r"cp\.async\.c[ag]", ptx)),
            "vector_loads": len(re.findall(r"ld\.global[^\n]*\.v[24]", ptx)),
            "global_loads": len(re.findall(r"ld\.global", ptx)), "shared_bytes": kernel.metadata.shared}


def main() -> int:
    from einsim.kernels.decode import paged, splitkv

    strides = ("stride_qb", "stride_qh", "stride_qm")
    print("kernel         config           " + "  ".join(("compile_s", "cp_async", "vector_loads",
                                                           "global_loads", "shared_bytes")))
    stats = compile_stats(
        splitkv._decode_split, {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Partials": "*fp32"},
        dict(IS_CAUSAL=False, HAS_WINDOW=False, DOT_FP32=False, EVEN_D=True, USE_TMA=False,
             BLOCK_M=16, BLOCK_N=128, BLOCK_D=128, BLOCK_DV=128),
        ones=("stride_qd", "stride_kd", "stride_vd"), floats=("scale_log2",),
        divisible=strides + ("stride_kb", "stride_kh", "stride_kn", "stride_vb", "stride_vh", "stride_vn",
                             "n_partials", "head_dim", "v_head_dim", "kv_len", "split_len", "kv_lo", "kv_hi"))
    print(f"{'decode':14s} {'N128 w4 s3':16s} " + "  ".join(f"{v:>9}" for v in stats.values()))
    for label, is_paged in (("decode-paged", True), ("  contiguous", False)):
        for block_n, warps, stages in ((128, 4, 3), (64, 4, 3)):
            stats = compile_stats(
                paged._paged_split, {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "BlockTable": "*i32",
                                     "Seqlens": "*i32", "Partials": "*fp32"},
                dict(PAGED=is_paged, ALIGNED=True, IS_CAUSAL=False, DOT_FP32=False, EVEN_D=True,
                     BLOCK_M=16, BLOCK_N=block_n, BLOCK_D=128, BLOCK_DV=128, BLOCK_B=64, MIN_TILES=4),
                ones=("stride_qd", "stride_kd", "stride_vd", "stride_tp"), floats=("scale_log2",),
                divisible=strides + ("stride_kp", "stride_kr", "stride_kh", "stride_vp", "stride_vr",
                                     "stride_vh", "n_partials", "head_dim", "v_head_dim", "page_size",
                                     "capacity", "stride_tb"),
                num_warps=warps, num_stages=stages)
            print(f"{label:14s} {f'N{block_n} w{warps} s{stages}':16s} "
                  + "  ".join(f"{v:>9}" for v in stats.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
