"""Measure what the one GPU cost model is fitted to and validated against, on the GPU at hand:
ceilings, a forward/backward attention sweep over N = 128..16k, and llama-style layers.

    python benchmarks/measure_gpu_model.py --out DIR                 # everything (~150 s on an H200)
    python benchmarks/measure_gpu_model.py --out DIR --parts ceilings,layer

Writes DIR/ceilings.csv, DIR/attention.csv, DIR/layer.csv and prints a short table of each.
- ceilings: matmul per dtype on random data (bf16, fp16, fp8 e4m3 through torch._scaled_mm,
  tf32, fp32), device copy / read / write bandwidth (beyond L2), an L2-resident read bandwidth,
  exp2 (SFU) and FP32 FMA throughput (Triton loops), and the cost of one tiny kernel (eager and
  inside a CUDA graph).
- attention: bf16, batch x N = 16k tokens, hidden 2048 (H = 2048 / D), D 64 and 128, causal and
  not, forward and backward of einsim's kernels (`einsim.kernels.attention`), SDPA cuDNN, SDPA
  flash (FA2) and FlexAttention (compiled per shape, within a compile budget). Every backend is
  checked against the fp32 torch twin of the float64 oracle on a slice of the batch before it is
  timed; a backend that fails the check is not timed. Columns follow ../shared/anchors
  (kind, backend, N, D, causal, ms, tflops, tbps) plus batch, heads, check error and a note.
- layer: one llama3-8b layer (RMSNorm, Q/K/V/O projections, rotary, SDPA with GQA, SwiGLU MLP,
  residuals) in torch eager bf16, prefill and decode, the whole layer eagerly and as a CUDA graph
  replay, and each operator alone.
Each case is in its own try/except: an error is printed and the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from einsim.einsum_cascades.reference import attention_reference_torch  # noqa: E402

TOKENS = 16384
HIDDEN = 2048
# the held-out lengths (benchmarks/data/README.md) last, so that a cut budget loses them first
LENGTHS = (128, 256, 512, 1024, 4096, 16384, 2048, 8192)
FLEX_LENGTHS = (128, 512, 4096, 2048)
GRAPH_MAX_LENGTH = 1024  # up to this N each timing also records a CUDA-graph replay and the host wall  # Flex recompiles per shape: a subset, within a budget
TOLERANCE = {"prefill": 2e-2, "backward": 5e-2}  # max |error| / max |reference|, bf16
DEADLINE = [math.inf]
LENGTHS_ARG: list[int] = []  # --lengths
DEVICE = "cuda"  # the CPU smoke test (tests/ does not run it; see the docstring) sets "cpu"


def time_ms(fn, warmup: int = 10, rep: int = 40) -> float:
    """Median GPU time of fn (ms) by triton.testing.do_bench (L2 flushed between calls)."""
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def out_of_time() -> bool:
    return time.time() > DEADLINE[0]


# -- ceilings --------------------------------------------------------------------------------
@triton.jit
def _exp2_loop(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """4 independent chains per element of x <- exp2(x) - 1 (stays in [-1, 0]): one MUFU.EX2 and
    one FADD per step, so the SFU (16 per SM per clock) is the bottleneck."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(x_ptr + offs)
    b, c, d = a * 0.5, a * 0.25, a * 0.125
    for _ in range(ITERS):
        a = tl.math.exp2(a) - 1.0
        b = tl.math.exp2(b) - 1.0
        c = tl.math.exp2(c) - 1.0
        d = tl.math.exp2(d) - 1.0
    tl.store(out_ptr + offs, a + b + c + d)


@triton.jit
def _fma_loop(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """8 independent chains of x <- x * 0.999 + 0.001 (one FFMA each per step)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(x_ptr + offs)
    b, c, d = a + 1.0, a + 2.0, a + 3.0
    e, f, g, h = a + 4.0, a + 5.0, a + 6.0, a + 7.0
    for _ in range(ITERS):
        a = a * 0.999 + 0.001
        b = b * 0.999 + 0.001
        c = c * 0.999 + 0.001
        d = d * 0.999 + 0.001
        e = e * 0.999 + 0.001
        f = f * 0.999 + 0.001
        g = g * 0.999 + 0.001
        h = h * 0.999 + 0.001
    tl.store(out_ptr + offs, a + b + c + d + e + f + g + h)


@triton.jit
def _l2_read(x_ptr, out_ptr, n_blocks, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    """Each program reads ITERS different BLOCKs of an L2-resident buffer through L2 only (.cg)."""
    pid = tl.program_id(0)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(ITERS):
        block = (pid + i * 97) % n_blocks
        acc += tl.load(x_ptr + block * BLOCK + tl.arange(0, BLOCK), cache_modifier=".cg").to(tl.float32)
    tl.store(out_ptr + pid * BLOCK + tl.arange(0, BLOCK), acc)


def matmul_rows(rows: list[dict]) -> None:
    n = 8192
    cases = {"bf16": torch.bfloat16, "fp16": torch.float16}
    for name, dtype in cases.items():
        a = torch.randn(n, n, device=DEVICE, dtype=dtype)
        b = torch.randn(n, n, device=DEVICE, dtype=dtype)
        ms = time_ms(lambda: a @ b, rep=100)
        rows.append(dict(kind="ceiling", what=f"matmul_{name}", value=2 * n**3 / ms / 1e9, unit="TFLOP/s", ms=ms,
                         note=f"{n}^3 random normal"))
    a8 = torch.randn(n, n, device=DEVICE).to(torch.float8_e4m3fn)
    b8 = torch.randn(n, n, device=DEVICE).to(torch.float8_e4m3fn).t()  # column-major, as _scaled_mm wants
    one = torch.tensor(1.0, device=DEVICE)
    ms = time_ms(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16), rep=100)
    rows.append(dict(kind="ceiling", what="matmul_fp8", value=2 * n**3 / ms / 1e9, unit="TFLOP/s", ms=ms,
                     note=f"{n}^3 e4m3 x e4m3 -> bf16, torch._scaled_mm, per-tensor scales"))
    a32 = torch.randn(n, n, device=DEVICE)
    b32 = torch.randn(n, n, device=DEVICE)
    for name, allow in (("tf32", True), ("fp32", False)):
        torch.backends.cuda.matmul.allow_tf32 = allow
        ms = time_ms(lambda: a32 @ b32, rep=100)
        rows.append(dict(kind="ceiling", what=f"matmul_{name}", value=2 * n**3 / ms / 1e9, unit="TFLOP/s", ms=ms,
                         note=f"{n}^3 fp32 inputs, allow_tf32={allow}"))
    torch.backends.cuda.matmul.allow_tf32 = False
    # attention-sized matmuls: the tile shapes an attention kernel's matmuls are made of, batched
    for m_, k_ in ((128, 64), (128, 128)):
        batch = 4096
        a = torch.randn(batch, m_, k_, device=DEVICE, dtype=torch.bfloat16)
        b = torch.randn(batch, k_, 128, device=DEVICE, dtype=torch.bfloat16)
        ms = time_ms(lambda: torch.bmm(a, b))
        rows.append(dict(kind="ceiling", what=f"bmm_bf16_{m_}x{k_}x128", value=2 * batch * m_ * k_ * 128 / ms / 1e9,
                         unit="TFLOP/s", ms=ms, note=f"batch {batch} (memory-bound reference)"))


def bandwidth_rows(rows: list[dict]) -> None:
    elements = 1 << 29  # 1 GiB of bf16
    x = torch.randn(elements, device=DEVICE, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    ms = time_ms(lambda: y.copy_(x), rep=100)
    rows.append(dict(kind="ceiling", what="copy", value=2 * nbytes / ms / 1e9, unit="TB/s", ms=ms,
                     note="1 GiB device-to-device, bytes read + written"))
    ms = time_ms(lambda: torch.sum(x, dtype=torch.float32), rep=100)
    rows.append(dict(kind="ceiling", what="read", value=nbytes / ms / 1e9, unit="TB/s", ms=ms, note="1 GiB sum"))
    ms = time_ms(lambda: y.fill_(1.0), rep=100)
    rows.append(dict(kind="ceiling", what="write", value=nbytes / ms / 1e9, unit="TB/s", ms=ms, note="1 GiB fill"))
    del x, y
    block, blocks = 4096, 3072  # 24 MiB of fp16: fits the L2 (50-60 MB)
    buf = torch.randn(block * blocks, device=DEVICE, dtype=torch.float16)
    programs, iters = 132 * 16, 256
    out = torch.empty(programs * block, device=DEVICE, dtype=torch.float32)
    run = lambda: _l2_read[(programs,)](buf, out, blocks, ITERS=iters, BLOCK=block, num_warps=8)  # noqa: E731
    run()
    # no L2 flush between calls here: the point is to read from L2
    ms = triton.testing.do_bench(run, warmup=10, rep=40, return_mode="median", grad_to_none=None)
    rows.append(dict(kind="ceiling", what="l2_read", value=programs * iters * block * 2 / ms / 1e9, unit="TB/s",
                     ms=ms, note="24 MiB fp16 buffer re-read through L2 (ld.global.cg), 2112 programs x 256 blocks"))


def unit_rows(rows: list[dict]) -> None:
    block, programs, iters = 1024, 132 * 64, 512
    x = -torch.rand(programs * block, device=DEVICE)
    out = torch.empty_like(x)
    run = lambda: _exp2_loop[(programs,)](x, out, ITERS=iters, BLOCK=block, num_warps=4)  # noqa: E731
    run()
    assert torch.isfinite(out).all(), "exp2 loop left its range"
    ms = time_ms(run)
    exps = programs * block * iters * 4
    rows.append(dict(kind="ceiling", what="exp2_sfu", value=exps / ms / 1e9, unit="Top/s", ms=ms,
                     note="MUFU.EX2 fp32, 4 chains (+1 FADD each)"))
    run = lambda: _fma_loop[(programs,)](x, out, ITERS=iters, BLOCK=block, num_warps=4)  # noqa: E731
    run()
    ms = time_ms(run)
    fmas = programs * block * iters * 8
    rows.append(dict(kind="ceiling", what="fma_fp32", value=fmas / ms / 1e9, unit="Top/s", ms=ms,
                     note="FFMA per second (x2 for FLOP/s), 8 chains"))
    tiny = torch.zeros(1, device=DEVICE)
    ms = time_ms(lambda: tiny.add_(1.0))
    rows.append(dict(kind="ceiling", what="tiny_kernel", value=ms * 1e3, unit="us", ms=ms,
                     note="one 1-element add, do_bench (launch + execution)"))
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(2000):
        tiny.add_(1.0)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - started) / 2000
    rows.append(dict(kind="ceiling", what="eager_launch_wall", value=wall * 1e6, unit="us", ms=wall * 1e3,
                     note="host wall time per eager tiny kernel, 2000 back to back"))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        tiny.add_(1.0)
        with torch.cuda.graph(graph):
            for _ in range(100):
                tiny.add_(1.0)
    torch.cuda.current_stream().wait_stream(stream)
    ms = time_ms(graph.replay) / 100
    rows.append(dict(kind="ceiling", what="graph_kernel", value=ms * 1e3, unit="us", ms=ms,
                     note="per tiny kernel inside a 100-kernel CUDA graph replay"))


# -- attention sweep -------------------------------------------------------------------------
def make_inputs(batch: int, heads: int, n: int, d: int, seed: int = 0):
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    return tuple(torch.randn(batch, heads, n, d, device=DEVICE, dtype=torch.bfloat16, generator=generator)
                 for _ in range(4))


def sdpa(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def einsim_attention(q, k, v, causal):
    from einsim.kernels import attention

    return attention(q, k, v, causal=causal)


class Flex:
    """FlexAttention compiled by torch.compile (one compile per shape and mask), with dynamo's
    recompile limits raised so it never falls back to the eager path; compiling stops once the
    budget is spent."""

    def __init__(self, budget_s: float) -> None:
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        torch._dynamo.config.cache_size_limit = 1024
        for name in ("recompile_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 4096)
        self.compiled = torch.compile(flex_attention, dynamic=False)
        self.budget_s = budget_s
        self.spent_s = 0.0
        self.masks: dict = {}

    def available(self) -> bool:
        return self.spent_s < self.budget_s

    def __call__(self, q, k, v, causal):
        from torch.nn.attention.flex_attention import create_block_mask

        key = (q.shape[2], k.shape[2], causal)
        if causal and key not in self.masks:
            self.masks[key] = create_block_mask(lambda b, h, qi, ki: ki <= qi, B=None, H=None, Q_LEN=q.shape[2],
                                                KV_LEN=k.shape[2], device=DEVICE)
        return self.compiled(q, k, v, block_mask=self.masks.get(key))


def check(run, q, k, v, do, causal: bool, kind: str) -> float:
    """max |error| / max |reference| of run's output (prefill) or gradients (backward), run on the
    full inputs (the shape that is timed, so nothing compiles twice) and compared on the first
    batch element and two heads against the fp32 torch twin of the float64 oracle (heads are
    independent without GQA, so the slice's gradients are the sliced problem's)."""
    qs, ks, vs, dos = (t[:1, :2].detach() for t in (q, k, v, do))
    ref_in = [t.float().requires_grad_(kind == "backward") for t in (qs, ks, vs)]
    want, _ = attention_reference_torch(*ref_in, causal=causal, dtype=torch.float32)
    if kind == "prefill":
        with torch.no_grad():
            got = run(q, k, v, causal)[:1, :2]
        return ((got.float() - want).abs().max() / want.abs().max()).item()
    want_grads = torch.autograd.grad(want, ref_in, dos.float())
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    got_grads = torch.autograd.grad(run(*leaves, causal), leaves, do)
    return max(((g[:1, :2].float() - w).abs().max() / w.abs().max()).item()
               for g, w in zip(got_grads, want_grads))


GRAPH_FAILURES: set[tuple[str, str]] = set()  # (kind, backend) whose capture failed once: not tried again


def graphed(run, q, k, v, do, causal: bool, kind: str, backend: str = "") -> float | None:
    """Median time of one call replayed as a CUDA graph: the GPU's time without the host's
    launch path (what the cost model predicts). The backward's forward runs on the capture stream
    too, so autograd replays its kernels there (the legacy stream cannot join a capture)."""
    if (kind, backend) in GRAPH_FAILURES:
        return None
    try:
        if kind == "prefill":
            def call():
                with torch.no_grad():
                    return run(q, k, v, causal)
            return graph_ms(call)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
            out = run(*leaves, causal)
            for _ in range(2):
                torch.autograd.grad(out, leaves, do, retain_graph=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                torch.autograd.grad(out, leaves, do, retain_graph=True)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        return time_ms(graph.replay)
    except Exception as error:  # a capture that fails leaves the timing eager-only, and says why once
        GRAPH_FAILURES.add((kind, backend))
        print(f"  CUDA-graph capture of {backend} {kind} failed ({type(error).__name__}: {str(error)[:200]}); "
              f"its {kind} rows keep their eager times only")
        torch.cuda.synchronize()
        return None


def host_wall_ms(run, q, k, v, do, causal: bool, kind: str, calls: int = 50) -> float:
    """Wall time per call of `calls` back-to-back eager calls (host launch path included)."""
    if kind == "prefill":
        def call():
            with torch.no_grad():
                return run(q, k, v, causal)
    else:
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        out = run(*leaves, causal)

        def call():
            return torch.autograd.grad(out, leaves, do, retain_graph=True)
    call()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / calls * 1e3


def timed(run, q, k, v, do, causal: bool, kind: str) -> float:
    if kind == "prefill":
        def forward():
            with torch.no_grad():
                return run(q, k, v, causal)
        return time_ms(forward)
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = run(*leaves, causal)
    return time_ms(lambda: torch.autograd.grad(out, leaves, do, retain_graph=True))


def visible_pairs(n: int, causal: bool) -> int:
    return n * (n + 1) // 2 if causal else n * n


def attention_rows(rows: list[dict], flex_budget_s: float) -> None:
    backends = {"einsim": einsim_attention, "sdpa_cudnn": sdpa("CUDNN_ATTENTION"),
                "sdpa_flash": sdpa("FLASH_ATTENTION")}
    flex = None
    try:
        flex = Flex(flex_budget_s)
    except Exception as error:  # Flex missing is a result, not a crash
        print(f"flex unavailable: {type(error).__name__}: {error}")
    for n in LENGTHS_ARG or LENGTHS:
        for d in HEAD_DIMS_ARG or (64, 128):
            for causal in (False, True):
                if out_of_time():
                    print("(time budget spent: the rest of the sweep is skipped)")
                    return
                batch, heads = max(1, TOKENS // n), HIDDEN // d
                try:
                    q, k, v, do = make_inputs(batch, heads, n, d)
                except Exception as error:
                    print(f"inputs N{n} D{d}: {type(error).__name__}: {error}")
                    continue
                cases = dict(backends)
                if flex is not None and n in FLEX_LENGTHS and flex.available():
                    cases["flex"] = flex
                for kind in KINDS_ARG or ("prefill", "backward"):
                    for backend, run in cases.items():
                        started = time.time()
                        note = ""
                        try:
                            error = check(run, q, k, v, do, causal, kind)
                            if not error <= TOLERANCE[kind]:
                                raise AssertionError(f"check failed: error {error:.3g} > {TOLERANCE[kind]}")
                            ms = timed(run, q, k, v, do, causal, kind)
                            if n <= GRAPH_MAX_LENGTH:  # short sequences: GPU time and host time apart
                                replay = graphed(run, q, k, v, do, causal, kind, backend)
                                note = ((f"graph_ms={replay:.5f} " if replay is not None else "")
                                        + f"wall_ms={host_wall_ms(run, q, k, v, do, causal, kind):.5f}")
                        except Exception as exc:
                            print(f"  {kind} {backend} N{n} D{d} c{int(causal)}: {type(exc).__name__}: {str(exc)[:300]}")
                            traceback.print_exc(limit=1)
                            continue
                        finally:
                            if backend == "flex":
                                flex.spent_s += time.time() - started
                        pairs = batch * heads * visible_pairs(n, causal)
                        matmul_flops = pairs * 2 * (d + d) * (2.5 if kind == "backward" else 1.0)
                        min_bytes = batch * heads * n * d * 2 * (4 if kind == "prefill" else 8)
                        rows.append(dict(kind=kind, backend=backend, N=n, D=d, causal=int(causal), ms=ms,
                                         tflops=matmul_flops / ms / 1e9, tbps=min_bytes / ms / 1e9, batch=batch,
                                         heads=heads, check_error=error, note=note))
                        print(f"{kind:8s} {backend:10s} N{n:6d} D{d:4d} c{int(causal)} {ms:9.4f} ms "
                              f"{matmul_flops / ms / 1e9:7.1f} TFLOP/s  err {error:.1e}", flush=True)
                del q, k, v, do
                torch.cuda.empty_cache()


# -- llama-style layer -----------------------------------------------------------------------
LLAMA3_8B = dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=14336, eps=1e-5)


LAYER_GENERATOR: list = []


def randn(*shape):
    """bf16 normal values from a generator of the layer part's own: a capture that failed earlier
    (attention part) can leave the default CUDA generator unusable outside capture."""
    if not LAYER_GENERATOR:
        LAYER_GENERATOR.append(torch.Generator(device=DEVICE).manual_seed(0))
    return torch.randn(*shape, device=DEVICE, dtype=torch.bfloat16, generator=LAYER_GENERATOR[0])


class LlamaLayer:
    """One llama3-style decoder layer in torch eager bf16, written as Hugging Face's
    LlamaDecoderLayer computes it (pre-norm, separate q/k/v projections, rotate-half rotary,
    SDPA with GQA, SwiGLU); weights random."""

    def __init__(self, c: dict) -> None:
        def weight(rows, cols):
            return randn(rows, cols) * cols ** -0.5

        self.c = c
        hd = c["head_dim"]
        self.wq, self.wk = weight(c["heads"] * hd, c["hidden"]), weight(c["kv_heads"] * hd, c["hidden"])
        self.wv, self.wo = weight(c["kv_heads"] * hd, c["hidden"]), weight(c["hidden"], c["heads"] * hd)
        self.w_gate, self.w_up = weight(c["ffn"], c["hidden"]), weight(c["ffn"], c["hidden"])
        self.w_down = weight(c["hidden"], c["ffn"])
        self.norm1 = torch.ones(c["hidden"], device=DEVICE, dtype=torch.bfloat16)
        self.norm2 = torch.ones(c["hidden"], device=DEVICE, dtype=torch.bfloat16)

    def rms_norm(self, x, weight):
        return F.rms_norm(x, (x.shape[-1],), weight, self.c["eps"])

    @staticmethod
    def rotary(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def ops(self, x, cache=None):
        """(name, callable) of every operator in order, each reading what the previous produced;
        plus the whole layer. cache: (k, v) [B, G, L, D] for decode (x is one token per row)."""
        c = self.c
        B, T, _ = x.shape
        hd, H, G = c["head_dim"], c["heads"], c["kv_heads"]
        L = T if cache is None else cache[0].shape[2]
        position = torch.arange(L - T, L, device=DEVICE, dtype=torch.float32)
        inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=DEVICE, dtype=torch.float32) / hd))
        angles = torch.outer(position, inv)
        cos = torch.cat((angles.cos(), angles.cos()), -1).to(torch.bfloat16)
        sin = torch.cat((angles.sin(), angles.sin()), -1).to(torch.bfloat16)
        s = {}
        s["h"] = self.rms_norm(x, self.norm1)
        s["q"] = F.linear(s["h"], self.wq).view(B, T, H, hd).transpose(1, 2)
        s["k"] = F.linear(s["h"], self.wk).view(B, T, G, hd).transpose(1, 2)
        s["v"] = F.linear(s["h"], self.wv).view(B, T, G, hd).transpose(1, 2)
        s["qr"], s["kr"] = self.rotary(s["q"], cos, sin), self.rotary(s["k"], cos, sin)
        keys, values = (s["kr"], s["v"]) if cache is None else cache
        s["a"] = F.scaled_dot_product_attention(s["qr"], keys, values, is_causal=cache is None, enable_gqa=True)
        s["a2"] = s["a"].transpose(1, 2).reshape(B, T, H * hd)
        s["o"] = F.linear(s["a2"], self.wo)
        s["x2"] = x + s["o"]
        s["h2"] = self.rms_norm(s["x2"], self.norm2)
        s["g"] = F.linear(s["h2"], self.w_gate)
        s["u"] = F.linear(s["h2"], self.w_up)
        s["m"] = F.silu(s["g"]) * s["u"]
        s["d"] = F.linear(s["m"], self.w_down)

        def attention():
            return F.scaled_dot_product_attention(s["qr"], keys, values, is_causal=cache is None, enable_gqa=True)

        def attention_with(backend_name):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def run():
                with sdpa_kernel(getattr(SDPBackend, backend_name)):
                    return attention()
            return run

        ops = [
            ("rms_norm_1", lambda: self.rms_norm(x, self.norm1)),
            ("q_proj", lambda: F.linear(s["h"], self.wq)),
            ("k_proj", lambda: F.linear(s["h"], self.wk)),
            ("v_proj", lambda: F.linear(s["h"], self.wv)),
            ("rotary_qk", lambda: (self.rotary(s["q"], cos, sin), self.rotary(s["k"], cos, sin))),
            ("attention", attention),
            ("o_proj", lambda: F.linear(s["a2"], self.wo)),
            ("residual_1", lambda: x + s["o"]),
            ("rms_norm_2", lambda: self.rms_norm(s["x2"], self.norm2)),
            ("gate_proj", lambda: F.linear(s["h2"], self.w_gate)),
            ("up_proj", lambda: F.linear(s["h2"], self.w_up)),
            ("silu_mul", lambda: F.silu(s["g"]) * s["u"]),
            ("down_proj", lambda: F.linear(s["m"], self.w_down)),
            ("residual_2", lambda: s["x2"] + s["d"]),
        ] + [(f"attention[{name}]", attention_with(name))
             for name in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")]
        return ops, lambda: self.layer(x, cos, sin, cache)

    def layer(self, x, cos, sin, cache):
        c = self.c
        B, T, _ = x.shape
        hd, H, G = c["head_dim"], c["heads"], c["kv_heads"]
        h = self.rms_norm(x, self.norm1)
        q = self.rotary(F.linear(h, self.wq).view(B, T, H, hd).transpose(1, 2), cos, sin)
        k = self.rotary(F.linear(h, self.wk).view(B, T, G, hd).transpose(1, 2), cos, sin)
        v = F.linear(h, self.wv).view(B, T, G, hd).transpose(1, 2)
        if cache is not None:
            k, v = cache
        a = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None, enable_gqa=True)
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, H * hd), self.wo)
        h = self.rms_norm(x, self.norm2)
        return x + F.linear(F.silu(F.linear(h, self.w_gate)) * F.linear(h, self.w_up), self.w_down)


def kernel_count(fn) -> int | str:
    """CUDA kernels one call of fn launches (torch.profiler), to check how eager PyTorch splits an
    operator into kernels; '' when the profiler is unavailable."""
    try:
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for event in prof.events() if str(event.device_type).endswith("CUDA"))
    except Exception as error:  # the count is a diagnostic; its absence is not a failure
        print(f"kernel count: {type(error).__name__}: {error}")
        return ""


def graph_ms(fn) -> float:
    """Median time of fn replayed as a CUDA graph (no host launch gaps)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    return time_ms(graph.replay)


LAYER_CASES_ARG: list[tuple[str, int, int]] = []  # --layer-cases
KINDS_ARG: list[str] = []  # --kinds
HEAD_DIMS_ARG: list[int] = []  # --head-dims
LAYER_CASES = (  # (mode, batch, tokens per row (prefill) or cached keys (decode))
    ("prefill", 1, 512), ("prefill", 1, 2048), ("prefill", 1, 8192), ("prefill", 4, 4096),
    ("decode", 1, 4096), ("decode", 16, 4096), ("decode", 64, 4096), ("decode", 1, 32768),
)


def layer_rows(rows: list[dict]) -> None:
    c = LLAMA3_8B
    layer = LlamaLayer(c)
    for mode, batch, length in LAYER_CASES_ARG or LAYER_CASES:
        if out_of_time():
            print("(time budget spent: the remaining layer cases are skipped)")
            return
        try:
            with torch.no_grad():
                tokens = length if mode == "prefill" else 1
                x = randn(batch, tokens, c["hidden"])
                cache = None
                if mode == "decode":
                    cache = tuple(randn(batch, c["kv_heads"], length, c["head_dim"]) for _ in range(2))
                ops, whole = layer.ops(x, cache)
                label = f"llama3-8b {mode} B{batch} {'N' if mode == 'prefill' else 'L'}{length}"
                eager = time_ms(whole)
                started = time.perf_counter()
                for _ in range(20):
                    whole()
                torch.cuda.synchronize()
                wall = (time.perf_counter() - started) / 20 * 1e3
                graphed = graph_ms(whole)
                rows.append(dict(model="llama3-8b", mode=mode, batch=batch, length=length, op="layer",
                                 ms=eager, graph_ms=graphed, wall_ms=wall, kernels=kernel_count(whole)))
                print(f"{label:36s} layer eager {eager:8.3f} ms  graph {graphed:8.3f} ms  wall {wall:8.3f} ms",
                      flush=True)
                for name, fn in ops:
                    try:
                        ms = time_ms(fn)
                        rows.append(dict(model="llama3-8b", mode=mode, batch=batch, length=length, op=name, ms=ms,
                                         graph_ms=graph_ms(fn), wall_ms="", kernels=kernel_count(fn)))
                    except Exception as error:  # a backend that cannot run this case is a result too
                        print(f"    {name}: {type(error).__name__}: {str(error)[:160]}")
                print("    " + "  ".join(f"{r['op']} {r['graph_ms']:.3f}" for r in rows
                                         if r.get("length") == length and r.get("batch") == batch
                                         and r.get("mode") == mode and r["op"] != "layer"), flush=True)
                del x, cache
                torch.cuda.empty_cache()
        except Exception as error:
            print(f"layer {mode} B{batch} {length}: {type(error).__name__}: {str(error)[:300]}")
            traceback.print_exc(limit=2)


# -- main ------------------------------------------------------------------------------------
COLUMNS = {
    "ceilings": ["kind", "what", "value", "unit", "ms", "note"],
    "attention": ["kind", "backend", "N", "D", "causal", "ms", "tflops", "tbps", "batch", "heads", "check_error",
                  "note"],
    "layer": ["model", "mode", "batch", "length", "op", "ms", "graph_ms", "wall_ms", "kernels"],
}


def write(out: Path, part: str, rows: list[dict], header: list[str]) -> None:
    path = out / f"{part}.csv"
    with open(path, "w", newline="") as handle:
        for line in header:
            handle.write(f"# {line}\n")
        writer = csv.DictWriter(handle, fieldnames=COLUMNS[part], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path} ({len(rows)} rows)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("JOB_OUT") or os.environ.get("OUT") or ".")
    parser.add_argument("--parts", default="ceilings,layer,attention")
    parser.add_argument("--budget-s", type=float, default=150.0, help="stop starting new cases after this")
    parser.add_argument("--flex-budget-s", type=float, default=45.0, help="seconds of Flex compile + timing")
    parser.add_argument("--lengths", type=int, nargs="*", default=[], help="attention sweep lengths (default all)")
    parser.add_argument("--layer-cases", default="", help="mode:batch:length,... (default the built-in cases)")
    parser.add_argument("--kinds", default="", help="attention kinds, e.g. backward (default prefill,backward)")
    parser.add_argument("--head-dims", type=int, nargs="*", default=[],
                        help="attention sweep head dims (default 64 128; heads = 2048 // D)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("measure_gpu_model: needs a CUDA GPU", file=sys.stderr)
        return 2
    started = time.time()
    DEADLINE[0] = started + args.budget_s
    LENGTHS_ARG[:] = args.lengths
    HEAD_DIMS_ARG[:] = args.head_dims
    KINDS_ARG[:] = [k for k in args.kinds.split(",") if k]
    if args.layer_cases:
        LAYER_CASES_ARG[:] = [(m, int(b), int(n)) for m, b, n in (c.split(":") for c in args.layer_cases.split(","))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = [f"GPU: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).multi_processor_count} SMs)",
              f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
              f"versions: torch {torch.__version__}, triton {triton.__version__}, "
              f"cuDNN {torch.backends.cudnn.version()}, CUDA {torch.version.cuda}",
              "command: python3 benchmarks/measure_gpu_model.py " + " ".join(argv if argv is not None else sys.argv[1:])]
    print("\n".join(header), flush=True)
    parts = [p for p in args.parts.split(",") if p]
    for part in parts:
        rows: list[dict] = []
        try:
            if part == "ceilings":
                for measure in (matmul_rows, bandwidth_rows, unit_rows):
                    try:
                        measure(rows)
                    except Exception as error:
                        print(f"{measure.__name__}: {type(error).__name__}: {str(error)[:300]}")
                        traceback.print_exc(limit=2)
                for row in rows:
                    print(f"ceiling {row['what']:24s} {row['value']:10.2f} {row['unit']:8s} ({row['note']})")
            elif part == "attention":
                attention_rows(rows, args.flex_budget_s)
            elif part == "layer":
                layer_rows(rows)
            else:
                print(f"unknown part {part!r}; known: {', '.join(COLUMNS)}")
                continue
        finally:
            write(out, part, rows, header)
        print(f"{part} done at {time.time() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
