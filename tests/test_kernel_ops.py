"""The kernels as PyTorch operators (einsim.kernels.ops): schema, fake implementations and
autograd pass torch.library.opcheck; a model calling einsim attention compiles with
fullgraph=True and no graph break and matches eager, gradients included; on a GPU, decode is
captured in a CUDA graph and replayed with new inputs in its static buffers (marked gpu)."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from einsim.kernels import attention, ops  # noqa: E402
from einsim.kernels.flash.config import FlashBackwardConfig, FlashConfig  # noqa: E402
from einsim.kernels.multipass.config import MultipassConfig  # noqa: E402

from test_kernel_flash import DEVICE, make_qkv  # noqa: E402

FORWARD = FlashConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1)
BACKWARD = FlashBackwardConfig(BLOCK_M=16, BLOCK_N=16, BLOCK_M_DQ=16, BLOCK_N_DQ=16, num_warps=4,
                               num_stages=1)


def test_operators_pass_opcheck():
    q, k, v = make_qkv(1, 2, 1, 5, 7, 16, "fp16")
    grads = [t.clone().requires_grad_(True) for t in (q, k, v)]
    torch.library.opcheck(torch.ops.einsim.attention_forward.default,
                          (*grads, True, None, None, ops.config_json(FORWARD),
                           ops.config_json(BACKWARD)))
    torch.library.opcheck(torch.ops.einsim.decode.default, (q[:, :, :1], k, v, False, None, None,
                                                            None))
    from einsim.kernels.decode import config as decode_config
    from einsim.problem import Problem

    served = decode_config.make_paged_inputs(
        Problem(batch=2, q_heads=2, kv_heads=1, q_len=1, kv_len=20, head_dim=16, dtype="fp16"),
        device=DEVICE, page_size=8, cache_seqlens=[20, 3])
    paged = ops.config_json(decode_config.PagedDecodeConfig(BLOCK_N=16, num_stages=1, PROGRAMS=2))
    torch.library.opcheck(torch.ops.einsim.decode_paged.default,
                          (served["q"], served["k_cache"], served["v_cache"],
                           served["cache_seqlens"], served["block_table"], False, None, paged))
    multipass = ops.config_json(MultipassConfig(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=1))
    torch.library.opcheck(torch.ops.einsim.attention_2pass.default,
                          (q, k, v, True, [3, 0], None, multipass),
                          test_utils=("test_schema", "test_faketensor"))


class TinyAttentionBlock(torch.nn.Module):
    """Projection, einsim attention (causal, GQA 2:1), output projection."""

    def __init__(self, dim=32, heads=2, kv_heads=1, head_dim=16):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.qkv = torch.nn.Linear(dim, (heads + 2 * kv_heads) * head_dim, dtype=torch.float16)
        self.out = torch.nn.Linear(heads * head_dim, dim, dtype=torch.float16)

    def forward(self, x):
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, -1, self.head_dim).transpose(1, 2).split(
            [self.heads, self.kv_heads, self.kv_heads], dim=1)
        o = attention(q, k, v, causal=True, config=FORWARD, backward_config=BACKWARD)
        return self.out(o.transpose(1, 2).reshape(batch, length, -1))


def test_compiled_model_has_no_graph_break_and_matches_eager():
    torch.manual_seed(0)
    model = TinyAttentionBlock().to(DEVICE)
    x = torch.randn(1, 9, 32, dtype=torch.float16, device=DEVICE)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    expected = model(x)
    expected.float().square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = compiled(x)
    got.float().square().sum().backward()
    assert torch.equal(got, expected)
    for grad, eager in zip((p.grad for p in model.parameters()), eager_grads):
        assert torch.allclose(grad.float(), eager.float(), atol=1e-3, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
def test_decode_replays_from_a_cuda_graph_with_static_buffers():
    from einsim.kernels.decode.forward import decode_attention

    q, k, v = make_qkv(2, 8, 2, 1, 1000, 128, "bf16")
    static_q = q.clone()
    decode_attention(static_q, k, v)  # plan, compile, warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out, _ = decode_attention(static_q, k, v)
    for seed in (1, 2):
        fresh, _, _ = make_qkv(2, 8, 2, 1, 1000, 128, "bf16", seed=seed)
        static_q.copy_(fresh)
        graph.replay()
        expected, _ = decode_attention(fresh, k, v)
        torch.cuda.synchronize()
        assert torch.equal(static_out, expected)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs a CUDA GPU")
def test_reduce_overhead_compile_matches_eager():
    torch.manual_seed(0)
    model = TinyAttentionBlock(dim=256, heads=4, kv_heads=2, head_dim=64).cuda()
    x = torch.randn(2, 100, 256, dtype=torch.float16, device="cuda")
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        expected = model(x)
        for _ in range(3):  # warm-up runs, then recorded and replayed graphs
            got = compiled(x)
    assert torch.allclose(got.float(), expected.float(), atol=2e-2, rtol=0)


def test_a_compiled_paged_decode_step_has_no_graph_break():
    from einsim.kernels.decode import config as decode_config
    from einsim.kernels.decode.forward import decode_paged
    from einsim.problem import Problem

    served = decode_config.make_paged_inputs(
        Problem(batch=2, q_heads=2, kv_heads=1, q_len=1, kv_len=20, head_dim=16, dtype="fp16"),
        device=DEVICE, page_size=8, cache_seqlens=[20, 3])
    config = decode_config.PagedDecodeConfig(BLOCK_N=16, num_stages=1, PROGRAMS=2)

    def step(q, k_cache, v_cache, lengths, table):
        out, _ = decode_paged(q * 1.0, k_cache, v_cache, lengths, table, config=config)
        return out + 1.0

    args = [served[n] for n in ("q", "k_cache", "v_cache", "cache_seqlens", "block_table")]
    torch._dynamo.reset()
    assert torch._dynamo.explain(step)(*args).graph_break_count == 0
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(*args), step(*args))
