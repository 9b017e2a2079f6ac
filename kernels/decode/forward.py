"""Front door of the split-KV decode kernel: check inputs, config and split plan, then launch
the split pass and the merge. Returns (out, lse) like the fused forward."""

from __future__ import annotations

from einsim.kernels.decode import config as cfg
from einsim.kernels import ops
from einsim.kernels.decode import paged, splitkv
from einsim.kernels.launch import plan_cache, tensor_key
from einsim.kernel_rules import padded_head_dim
from einsim.kernels.runtime import (check_attention_inputs, device_limits, interpreter_needs_fp32_dots,
                                    interpreting, patch_interpreter, raise_if_unfit)
from einsim.kernels.registry import get_kernel
from einsim.kernels.runtime import check_flag, check_scale


PLANS = plan_cache("decode")


class DecodePlan:
    """A decode call of one key, decided once: problem, config, split plan and launches."""

    __slots__ = ("problem", "config", "split", "scale", "dot_fp32", "launches", "descriptors")

    def __init__(self, problem, config: cfg.DecodeConfig, split: cfg.SplitPlan, scale) -> None:
        self.problem = problem
        self.config = config
        self.split = split
        self.scale = scale
        self.dot_fp32 = interpreter_needs_fp32_dots(problem.dtype)
        self.launches = None
        self.descriptors = None

    def run(self, q, k, v):
        return splitkv.run(self, q, k, v)


def decode_plan(q, k, v, causal=False, window=None, scale=None, config=None, limits=None) -> DecodePlan:
    """The cached plan for these tensors and options (checked and resolved on first use)."""
    key, plan = PLANS.find(lambda: (tensor_key(q), tensor_key(k), tensor_key(v), causal, window,
                                    scale, config, limits))
    if plan is not None:
        return plan
    spec = get_kernel("decode")
    problem = check_attention_inputs(q, k, v, kernel=spec.name, causal=causal, window=window, scale=scale)
    limits = limits or device_limits(q.device)
    config = spec.resolve_config(config, problem, limits)
    raise_if_unfit(spec.config_reasons(config, problem, limits), spec.name, config, problem)
    if config.USE_TMA:
        _check_descriptor_alignment(k, v, config, problem)
    if interpreting():
        patch_interpreter()
    plan = DecodePlan(problem, config, cfg.split_plan(problem, config, limits), scale)
    return PLANS.store(key, plan)


def decode_attention(q, k, v, *, causal: bool = False, window=None, scale=None,
                     config: cfg.DecodeConfig | None = None, limits=None):
    """Attention of a few query rows (q [B, Hq, Nq, D], Nq small) against a KV cache
    (k/v [B, Hkv, Nk, D|Dv]) by the `decode-splitkv` cascade.

    `limits` (a DeviceLimits) drives the automatic split count; None reads the tensors' GPU
    (an H100's numbers on the interpreter). config None takes the tuned config for this
    problem, else `default_config`. Returns (out [B, Hq, Nq, Dv] in q's dtype, lse [B, Hq, Nq]
    fp32, natural log; -inf for rows that see no key). Checks, config and split plan are
    decided once per shape (a launch plan, docs/kernels.md).
    """
    if isinstance(window, list):
        window = tuple(window)
    if limits is None and ops.traced(q):
        return ops.decode(q, k, v, bool(causal), window, scale, ops.config_json(config))
    return decode_plan(q, k, v, causal, window, scale, config, limits).run(q, k, v)


def _check_descriptor_alignment(k, v, config, problem) -> None:
    """Tensor descriptors need 16-byte aligned base addresses and strides (but the last)."""
    for name, tensor in (("k", k), ("v", v)):
        size = tensor.element_size()
        if tensor.data_ptr() % 16 or any(stride * size % 16 for stride in tensor.stride()[:-1]):
            raise_if_unfit([f"USE_TMA needs {name} 16-byte aligned (address and strides "
                            f"{tuple(tensor.stride())}); pass USE_TMA=False or a contiguous copy"],
                           "decode", config, problem)


def launch(config, inputs):
    """Registry launcher: inputs as KernelSpec.make_inputs returns them."""
    return decode_attention(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                            window=inputs.get("window"), scale=inputs.get("scale"), config=config)


# -- serving decode: per-sequence lengths, paged KV cache (kernels/decode/paged.py) -----------
PAGED_PLANS = plan_cache("decode-paged")


class PagedDecodePlan:
    """A serving-decode call of one key, decided once: problem (kv_len = the cache's capacity
    per sequence), config, the fixed grid and scratch sizes (independent of the lengths, which
    stay on the GPU: capturable in a CUDA graph)."""

    __slots__ = ("problem", "config", "scale", "paged", "page_size", "capacity", "rows",
                 "row_tiles", "block_m", "block_dv", "programs", "slots", "out_shape",
                 "dot_fp32", "launches")

    def __init__(self, problem, config, scale, paged: bool, page_size: int, limits) -> None:
        self.problem = problem
        self.config = config
        self.scale = scale
        self.paged = paged
        self.page_size = page_size
        self.capacity = problem.kv_len
        self.rows = cfg.packed_rows(problem)
        self.block_m = cfg.paged_block_m(problem)
        self.row_tiles = -(-self.rows // self.block_m)
        self.block_dv = padded_head_dim(problem.v_head_dim)
        self.programs = cfg.paged_programs(problem, config, limits)
        self.slots = problem.batch * problem.kv_heads * self.row_tiles + self.programs
        self.out_shape = (problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim)
        self.dot_fp32 = interpreter_needs_fp32_dots(problem.dtype)
        self.launches = None


def _paged_problem(q, k_cache, v_cache, cache_seqlens, block_table, causal, scale):
    """The Problem a serving-decode call poses (kv_len = capacity per sequence), or a
    ShapeError naming the tensor and the fix."""
    import torch

    from einsim.errors import ShapeError
    from einsim.problem import Problem

    name = "decode-paged"
    for label, tensor in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache),
                          ("cache_seqlens", cache_seqlens)):
        if not isinstance(tensor, torch.Tensor):
            raise ShapeError(f"{name}: {label} must be a torch.Tensor, got {type(tensor).__name__}")
    if q.ndim != 4:
        raise ShapeError(f"{name}: q must be 4-D [batch, q_heads, q_len, head_dim], got "
                         f"{tuple(q.shape)}")
    batch, q_heads, q_len, head_dim = q.shape
    if block_table is not None:
        if not isinstance(block_table, torch.Tensor) or block_table.ndim != 2 \
                or block_table.dtype != torch.int32 or block_table.shape[0] != batch:
            raise ShapeError(f"{name}: block_table must be an int32 tensor [batch={batch}, "
                             f"max_pages], got {getattr(block_table, 'shape', block_table)!r} "
                             f"{getattr(block_table, 'dtype', '')}")
        layout = "[pages, page_size, kv_heads, head_dim] (paged)"
    else:
        layout = "[batch, kv_heads, max_len, head_dim]"
    for label, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        if cache.ndim != 4:
            raise ShapeError(f"{name}: {label} must be 4-D {layout}, got {tuple(cache.shape)}")
    if block_table is not None:
        _, page_size, kv_heads, _ = k_cache.shape
        if tuple(v_cache.shape[:3]) != tuple(k_cache.shape[:3]):
            raise ShapeError(f"{name}: k_cache {tuple(k_cache.shape)} and v_cache "
                             f"{tuple(v_cache.shape)} must have the same pages, page size, heads")
        capacity = block_table.shape[1] * page_size
    else:
        if k_cache.shape[0] != batch or tuple(v_cache.shape[:3]) != tuple(k_cache.shape[:3]):
            raise ShapeError(f"{name}: k_cache {tuple(k_cache.shape)} and v_cache "
                             f"{tuple(v_cache.shape)} must be {layout} with batch {batch}")
        kv_heads, capacity, page_size = k_cache.shape[1], k_cache.shape[2], k_cache.shape[2]
    if k_cache.shape[3] != head_dim:
        raise ShapeError(f"{name}: q and k_cache head dims differ: {head_dim} vs {k_cache.shape[3]}")
    if tuple(cache_seqlens.shape) != (batch,) or cache_seqlens.dtype != torch.int32:
        raise ShapeError(f"{name}: cache_seqlens must be int32 [batch={batch}], got "
                         f"{tuple(cache_seqlens.shape)} {cache_seqlens.dtype}")
    devices = {t.device for t in (q, k_cache, v_cache, cache_seqlens)
               if t is not None} | ({block_table.device} if block_table is not None else set())
    if len(devices) != 1:
        raise ShapeError(f"{name}: tensors are on different devices: {sorted(map(str, devices))}")
    if q.dtype != k_cache.dtype or q.dtype != v_cache.dtype or str(q.dtype) not in (
            "torch.float16", "torch.bfloat16"):
        raise ShapeError(f"{name}: q, k_cache, v_cache must share dtype float16 or bfloat16, got "
                         f"{q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if q.device.type != "cuda" and not interpreting():
        raise ShapeError(f"{name}: tensors are on {q.device}; the Triton kernels need a CUDA "
                         "device (or TRITON_INTERPRET=1 for Triton's CPU interpreter)")
    if q_heads % kv_heads:
        raise ShapeError(f"{name}: query heads ({q_heads}) must be a multiple of the cache's "
                         f"key/value heads ({kv_heads})")
    check_scale(scale, name)  # inf gave a NaN output
    v_head_dim = v_cache.shape[3]
    problem = Problem(batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len,
                      kv_len=capacity, head_dim=head_dim, v_head_dim=v_head_dim,
                      causal=check_flag(causal, "causal", name),  # 'no' was truthy: a causal mask
                      dtype="bf16" if q.dtype == torch.bfloat16 else "fp16")
    return problem, page_size


def paged_decode_plan(q, k_cache, v_cache, cache_seqlens, block_table=None, causal=False,
                      scale=None, config=None, limits=None) -> PagedDecodePlan:
    """The cached plan for these tensors and options (checked and resolved on first use)."""
    key, plan = PAGED_PLANS.find(lambda: (
        tensor_key(q), tensor_key(k_cache), tensor_key(v_cache), tensor_key(cache_seqlens),
        None if block_table is None else tensor_key(block_table), causal, scale, config, limits))
    if plan is not None:
        return plan
    spec = get_kernel("decode-paged")
    problem, page_size = _paged_problem(q, k_cache, v_cache, cache_seqlens, block_table, causal,
                                        scale)
    limits = limits or device_limits(q.device)
    config = spec.resolve_config(config, problem, limits)
    raise_if_unfit(spec.config_reasons(config, problem, limits), spec.name, config, problem)
    if interpreting():
        patch_interpreter()
    plan = PagedDecodePlan(problem, config, scale, block_table is not None, page_size, limits)
    return PAGED_PLANS.store(key, plan)


def decode_paged(q, k_cache, v_cache, cache_seqlens, block_table=None, *, causal: bool = False,
                 scale=None, config: cfg.PagedDecodeConfig | None = None, limits=None):
    """Serving decode: q [B, Hq, Nq, D] (Nq new tokens per sequence, <= 64) against a KV cache
    whose sequence b holds cache_seqlens[b] keys (int32 [B], on the GPU; the Nq new tokens are
    its last ones: query i sits at key position cache_seqlens[b] - Nq + i, and `causal` keeps
    keys up to it, as speculative decoding needs).

    The cache is either paged, k_cache/v_cache [pages, page_size, Hkv, D|Dv] with block_table
    int32 [B, max_pages] (sequence b's key j is row j % page_size of page
    block_table[b, j // page_size]: vLLM's and FlashInfer's layout), or contiguous
    [B, Hkv, max_len, D|Dv] with block_table None. Lengths are clamped to the capacity
    (max_pages · page_size or max_len); a sequence of length 0 returns zeros and lse = -inf.
    Returns (out [B, Hq, Nq, Dv] in q's dtype, lse [B, Hq, Nq] fp32, natural log). Nothing
    depends on the lengths' values on the host: a call can be captured in a CUDA graph and
    replayed after the lengths and tables change in place.
    """
    if limits is None and ops.traced(q):
        return ops.decode_paged(q, k_cache, v_cache, cache_seqlens, block_table, bool(causal), scale,
                                ops.config_json(config))
    plan = paged_decode_plan(q, k_cache, v_cache, cache_seqlens, block_table, causal, scale,
                             config, limits)
    return paged.run(plan, q, k_cache, v_cache, cache_seqlens, block_table)


def launch_paged(config, inputs):
    """Registry launcher of `decode-paged`: inputs as `make_paged_inputs` returns them."""
    return decode_paged(inputs["q"], inputs["k_cache"], inputs["v_cache"], inputs["cache_seqlens"],
                        inputs["block_table"], causal=inputs.get("causal", False),
                        scale=inputs.get("scale"), config=config)
