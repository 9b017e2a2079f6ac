"""A Llama-style block served with einsim attention: prefill under torch.compile (fullgraph, the
attention is one `torch.ops.einsim.attention_forward` node), then decode steps replayed from one
CUDA graph over a paged KV cache (`decode_paged`: block table + per-sequence lengths, updated in
place between replays), every output checked against the same block run with torch SDPA on
dense caches.

    python docs/examples/llama_block.py                 # on a GPU: real sizes, inductor, CUDA graph
    TRITON_INTERPRET=1 python docs/examples/llama_block.py --tiny   # CPU: Triton's interpreter

On the CPU there are no CUDA graphs: the decode steps run eagerly through the same code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from einsim.kernels import attention  # noqa: E402
from einsim.kernels.decode.config import PagedDecodeConfig  # noqa: E402
from einsim.kernels.decode.forward import decode_paged  # noqa: E402


class LlamaBlock(torch.nn.Module):
    """RMSNorm, attention with rotary positions and grouped KV heads, RMSNorm, SwiGLU MLP."""

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, hidden: int, dtype):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.norm1 = torch.nn.RMSNorm(dim, dtype=dtype)
        self.norm2 = torch.nn.RMSNorm(dim, dtype=dtype)
        self.qkv = torch.nn.Linear(dim, (heads + 2 * kv_heads) * head_dim, bias=False, dtype=dtype)
        self.out = torch.nn.Linear(heads * head_dim, dim, bias=False, dtype=dtype)
        self.gate_up = torch.nn.Linear(dim, 2 * hidden, bias=False, dtype=dtype)
        self.down = torch.nn.Linear(hidden, dim, bias=False, dtype=dtype)

    def project(self, x, positions):
        """q [B, H, N, D], k and v [B, Hkv, N, D] of x [B, N, dim] at `positions` [B, N]."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, -1, self.head_dim).transpose(1, 2).split(
            [self.heads, self.kv_heads, self.kv_heads], dim=1)
        return rotate(q, positions), rotate(k, positions), v

    def finish(self, x, attended):
        batch, _, length, _ = attended.shape
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, -1))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)

    def prefill(self, x):
        """Causal self-attention over the prompt; returns (output, k, v) so the cache can be filled."""
        positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        q, k, v = self.project(x, positions)
        return self.finish(x, attention(q, k, v, causal=True)), k, v


def rotate(x, positions, base: float = 10000.0):
    """Rotary position embedding (rotate-half form) of x [B, H, N, D] at positions [B, N]."""
    half = x.shape[-1] // 2
    frequencies = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions[:, None, :, None].float() * frequencies
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half].float(), x[..., half:].float()
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1).to(x.dtype)


class PagedCache:
    """A pool of pages [pages, page_size, Hkv, D] for K and V, a block table per sequence and the
    sequences' lengths, all on the GPU: a decode step writes its token and attends in place, so
    the step can be captured once and replayed."""

    def __init__(self, batch, kv_heads, head_dim, max_len, page_size, device, dtype):
        pages_per_sequence = -(-max_len // page_size)
        self.page_size = page_size
        shape = (batch * pages_per_sequence, page_size, kv_heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        # Pages handed out in a scrambled order, as an allocator that has run a while would.
        order = torch.randperm(batch * pages_per_sequence, generator=torch.Generator().manual_seed(0))
        self.block_table = order.view(batch, pages_per_sequence).to(device=device, dtype=torch.int32)
        self.lengths = torch.zeros(batch, device=device, dtype=torch.int32)

    def write(self, k, v, positions):
        """Store k/v [B, Hkv, N, D] of the tokens at `positions` [B, N] (no host synchronisation)."""
        pages = torch.gather(self.block_table, 1, (positions // self.page_size).to(torch.int64))
        rows = positions % self.page_size
        self.k[pages.long(), rows.long()] = k.transpose(1, 2)
        self.v[pages.long(), rows.long()] = v.transpose(1, 2)


def decode_step(block, cache, x, config=None):
    """One new token per sequence: x [B, 1, dim] sits at position cache.lengths."""
    positions = cache.lengths[:, None].long()
    q, k, v = block.project(x, positions)
    cache.write(k, v, positions)
    cache.lengths += 1
    out, _ = decode_paged(q, cache.k, cache.v, cache.lengths, cache.block_table, causal=True,
                          config=config)
    return block.finish(x, out)


def reference_step(block, dense_k, dense_v, x, step_positions):
    """The same step with SDPA over dense caches [B, Hkv, N, D] (the check)."""
    q, k, v = block.project(x, step_positions)
    dense_k = torch.cat((dense_k, k), dim=2)
    dense_v = torch.cat((dense_v, v), dim=2)
    out = F.scaled_dot_product_attention(q, dense_k, dense_v, enable_gqa=True)
    return block.finish(x, out), dense_k, dense_v


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU interpreter)")
    parser.add_argument("--steps", type=int, default=None, help="decode steps (default 8, tiny 3)")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.tiny
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float16)
    if args.tiny:
        batch, dim, heads, kv_heads, head_dim, hidden, prompt, page = 2, 64, 4, 2, 16, 128, 7, 4
    else:
        batch, dim, heads, kv_heads, head_dim, hidden, prompt, page = 8, 2048, 16, 4, 128, 5632, 1000, 16
    steps = args.steps or (3 if args.tiny else 8)
    torch.manual_seed(0)
    block = LlamaBlock(dim, heads, kv_heads, head_dim, hidden, dtype).to(device).eval()
    # The interpreter runs programs one after another: a small stream-K grid on the CPU.
    config = None if gpu else PagedDecodeConfig(BLOCK_N=16, num_stages=1, PROGRAMS=4)
    x = torch.randn(batch, prompt, dim, device=device, dtype=dtype)
    errors = {}
    with torch.no_grad():
        # Prefill, compiled whole: einsim attention is one operator node, no graph break.
        compiled = torch.compile(block.prefill, fullgraph=True, backend="inductor" if gpu else "aot_eager")
        out, k, v = compiled(x)
        positions = torch.arange(prompt, device=device).expand(batch, -1)
        q_ref, k_ref, v_ref = block.project(x, positions)
        expected = block.finish(x, F.scaled_dot_product_attention(q_ref, k_ref, v_ref, is_causal=True,
                                                                  enable_gqa=True))
        errors["prefill"] = (out.float() - expected.float()).abs().max().item()

        cache = PagedCache(batch, kv_heads, head_dim, prompt + steps, page, device, dtype)
        cache.write(k, v, positions)
        cache.lengths.fill_(prompt)
        dense_k, dense_v = k_ref, v_ref
        token = torch.randn(batch, 1, dim, device=device, dtype=dtype)
        if gpu:
            static_token = token.clone()
            decode_step(block, cache, static_token)  # plan, compile, warm up: then roll it back
            cache.lengths -= 1
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # recorded, not run: the lengths stay as they are
                static_out = decode_step(block, cache, static_token)
        worst = 0.0
        for step in range(steps):
            step_positions = torch.full((batch, 1), prompt + step, device=device)
            if gpu:
                static_token.copy_(token)
                graph.replay()
                got = static_out.clone()
            else:
                got = decode_step(block, cache, token, config)
            want, dense_k, dense_v = reference_step(block, dense_k, dense_v, token, step_positions)
            worst = max(worst, (got.float() - want.float()).abs().max().item())
            token = torch.randn(batch, 1, dim, device=device, dtype=dtype)
        errors["decode"] = worst
    mode = "CUDA graph" if gpu else "eager (interpreter)"
    print(f"prefill (torch.compile, fullgraph) max |einsim - SDPA| = {errors['prefill']:.3g}")
    print(f"decode, {steps} steps, paged cache, {mode}: max |einsim - SDPA| = {errors['decode']:.3g}")
    return errors


if __name__ == "__main__":
    result = main()
    raise SystemExit(0 if max(result.values()) < 5e-2 else 1)
