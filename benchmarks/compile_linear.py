"""Compile the linear-attention walk kernel for sm_90 on a machine without a GPU (Triton's own
compiler and the ptxas it ships) and report what each config costs in resources: registers per
thread, bytes spilled to the stack, shared memory, and whether the chunk loads are pipelined
(asynchronous copies into a ring) — the facts that decide a config before any GPU time is spent.

    python benchmarks/compile_linear.py                      # the default configs' roles, D=128
    python benchmarks/compile_linear.py --warps 4,8 --block-c 64,128 --chunk 64 --stages 2,3 --decay

Integer arguments are specialised as Triton does at launch (unit strides as constants, the rest
divisible by 16), so the result is what the GPU compiles (same Triton version; the GPU machine
runs 3.6, this one may differ). TRITON_INTERPRET must be unset. CSV with --csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROLES = {  # (REVERSE, FEATURE_A, FEATURE_B, FEATURE_C, FEATURE_GRAD) of each walk of the kernels
    "forward": (False, 0, 0, 0, False),
    "dq": (False, 0, 0, 0, False),
    "dv": (True, 0, 0, 0, False),
    "dk": (True, 0, 0, 0, False),
    "forward-elu1": (False, 1, 1, 0, False),
    "dk-elu1": (True, 0, 0, 1, True),
}
POINTERS = {"A": "*bf16", "B": "*bf16", "C": "*bf16", "Out": "*bf16", "X": "*bf16", "StateIn": "*fp32",
            "StateOut": "*fp32", "Slope": "*fp32"}
FLOATS = ("out_scale", "state_in_scale", "state_out_scale")
UNIT_STRIDES = ("stride_ad", "stride_bd", "stride_cd", "stride_od", "stride_xd", "stride_ic", "stride_fc")


def compile_walk(*, role: str = "forward", decay: bool = False, chunk: int = 64, block_c: int = 64,
                 head_dim: int = 128, num_warps: int = 4, num_stages: int = 3) -> dict:
    """Compile `_chunk_walk` for one role and config (bf16, head dims a power of two) and return
    {"registers", "spill_bytes", "shared_bytes", "async_copies", "seconds"}."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from einsim.kernels.linear.chunk import _chunk_walk

    reverse, feature_a, feature_b, feature_c, feature_grad = ROLES[role]
    constants = dict(REVERSE=reverse, HAS_DECAY=decay, FEATURE_A=feature_a, FEATURE_B=feature_b,
                     FEATURE_C=feature_c, FEATURE_GRAD=feature_grad,
                     IO_DTYPE=tl.bfloat16, DOT_FP32=False, EVEN_AB=True, EVEN_C=True, CHUNK=chunk,
                     BLOCK_AB=head_dim, BLOCK_C=block_c)
    constants.update({name: 1 for name in UNIT_STRIDES})
    names = _chunk_walk.arg_names
    signature = {n: "constexpr" if n in constants else POINTERS.get(n, "fp32" if n in FLOATS else "i32")
                 for n in names}
    divisible = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
                 if n not in constants and (n in POINTERS or n.startswith("stride_"))}
    source = ASTSource(_chunk_walk, signature, {(names.index(k),): v for k, v in constants.items()}, divisible)
    started = time.time()
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    seconds = time.time() - started
    registers, spill = _resource_usage(compiled.asm["cubin"])
    return {"registers": registers, "spill_bytes": spill, "shared_bytes": int(compiled.metadata.shared),
            "async_copies": compiled.asm["ttgir"].count("async_copy_global_to_local"), "seconds": seconds}


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of the compiled kernel, from cuobjdump."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(cubin)
    try:
        text = subprocess.run([str(tool), "--dump-resource-usage", handle.name], capture_output=True, text=True,
                              timeout=60).stdout
    finally:
        os.unlink(handle.name)
    found = re.search(r"REG:(\d+) STACK:(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else (-1, -1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", default="forward,dv")
    parser.add_argument("--warps", default="4")
    parser.add_argument("--block-c", default="64")
    parser.add_argument("--chunk", default="64")
    parser.add_argument("--stages", default="3")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--decay", action="store_true", help="also the decay variant of every role")
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: this compiles for the GPU")
        return 2
    rows = []
    for role in args.roles.split(","):
        for decay in ((False, True) if args.decay else (False,)):
            for warps in map(int, args.warps.split(",")):
                for block_c in map(int, args.block_c.split(",")):
                    for chunk in map(int, args.chunk.split(",")):
                        for stages in map(int, args.stages.split(",")):
                            row = dict(role=role, decay=decay, num_warps=warps, BLOCK_C=block_c, CHUNK=chunk,
                                       num_stages=stages, head_dim=args.head_dim)
                            row.update(compile_walk(role=role, decay=decay, chunk=chunk, block_c=block_c,
                                                    head_dim=args.head_dim, num_warps=warps, num_stages=stages))
                            rows.append(row)
                            print(f"{role:12s} decay={decay!s:5s} warps={warps} BLOCK_C={block_c:3d} CHUNK={chunk:3d} "
                                  f"stages={stages}: {row['registers']} registers, {row['spill_bytes']} B spilled, "
                                  f"{row['shared_bytes']} B shared, {row['async_copies']} async copies", flush=True)
    if args.csv and rows:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
