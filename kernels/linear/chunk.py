"""Chunked causal linear attention (`linear-fwd`, `linear-bwd`): the Triton kernels, their
launchers and the autograd Function. docs/kernels.md § Linear attention.

    o_i = scale * (sum_{j <= i} g^(i-j) (phi(q_i)·phi(k_j)) v_j + g^(i+1) phi(q_i) S0),  g = exp(-slope[h])

One kernel, `_chunk_walk`, does all the work. A program owns one (batch, query head, block of
output columns, segment) and walks its segment chunk by chunk, carrying a running state
S [D_ab, BLOCK_C] in fp32 registers:

    out[chunk] = A·S (decayed per row) + mask(A·Bᵀ ⊙ decay)·C          the inter- and intra-chunk terms
    S          = g^len · S + (B decayed per row)ᵀ·C                    the state carried on

The forward is the walk with (A, B, C) = (scale·phi(q), phi(k), v). The backward is the same walk
three more times: dQ = walk(scale·dO, V, phi(K)) forward in time (its state is Sᵀ), and dV =
walk(phi(K), scale·phi(Q), dO), dK = walk(V, scale·dO, phi(Q)) backward in time, whose state is the
gradient of S (REVERSE flips the mask and measures decay from the chunk's end). So there is one
loop to get right, and the tests check every role of it against the float64 oracle.

A walk over the whole sequence is sequential in its chunks; SEGMENT cuts it into independent
walks: `_segment_sums` sums every segment's state contribution in parallel, `_segment_scan`
turns those into each segment's starting state (and the final state), then the walks run side by
side. Segment length = CHUNK is FLA's per-chunk state materialisation; no segments is Lightning
Attention-2's single walk.
"""

from __future__ import annotations

import triton
import triton.language as tl

from einsim.errors import ShapeError
from einsim.kernels.launch import TritonLaunch, name_of, plan_cache, remember_launch, tensor_key
from einsim.kernel_rules import padded_head_dim
from einsim.kernels.linear.config import LinearBackwardConfig, LinearConfig
from einsim.kernels.registry import KERNELS
from einsim.kernels.runtime import (check_attention_inputs, check_flag, device_limits, interpreter_needs_fp32_dots,
                                    interpreting, io_dtype, patch_interpreter)
from einsim.problem import Problem

LOG2_E = 1.4426950408889634
FEATURE_MAPS = {None: 0, "elu1": 1}


# -- Triton helpers ----------------------------------------------------------------------------------
@triton.jit
def _feature(x, FEATURE: tl.constexpr):
    """phi(x): the identity (0) or elu(x) + 1 (1)."""
    if FEATURE == 1:
        x = tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0)))
    return x


@triton.jit
def _operand(x, IO_DTYPE: tl.constexpr, DOT_FP32: tl.constexpr):
    """x as a tensor-core operand in the inputs' dtype; in the interpreter, rounded to it but kept
    fp32 (its bf16 dots are wrong, kernels.runtime.interpreter_needs_fp32_dots)."""
    if DOT_FP32:
        y = x.to(IO_DTYPE).to(tl.float32)
    else:
        y = x.to(IO_DTYPE)
    return y


@triton.jit
def _load_tile(X, base, rows, length, cols, dim, stride_n, stride_d, FEATURE: tl.constexpr,
               IO_DTYPE: tl.constexpr, DOT_FP32: tl.constexpr, EVEN: tl.constexpr):
    """phi(X[rows, cols]) as a tensor-core operand; zero outside the sequence and the head dim
    (also after phi, whose elu1 is 1 at 0). Without a feature map the loaded tile goes to the
    dots as it is, and with EVEN (the tile's columns all inside the head dim) only rows are
    masked, so Triton's pipeliner can prefetch it with asynchronous copies (a mask that varies
    along the contiguous dimension rules them out)."""
    if EVEN:
        mask = rows[:, None] < length
    else:
        mask = (rows[:, None] < length) & (cols[None, :] < dim)
    x = tl.load(X + base + rows[:, None] * stride_n + cols[None, :] * stride_d, mask=mask, other=0.0)
    if FEATURE != 0:
        x = tl.where(mask, _feature(x.to(tl.float32), FEATURE), 0.0)
        x = _operand(x, IO_DTYPE, DOT_FP32)
    elif DOT_FP32:
        x = x.to(tl.float32)
    return x


@triton.jit
def _walk_chunks(A, B, C, Out, X, base_a, base_b, base_c, base_o, base_x,
                 stride_an, stride_ad, stride_bn, stride_bd, stride_cn, stride_cd, stride_on, stride_od,
                 stride_xn, stride_xd, length, dim_ab, dim_c, first, count, state, out_scale,
                 rate, row_scale, column_scale, cols_ab, cols_c,
                 REVERSE: tl.constexpr, HAS_DECAY: tl.constexpr, SEPARABLE: tl.constexpr,
                 FEATURE_A: tl.constexpr, FEATURE_B: tl.constexpr, FEATURE_C: tl.constexpr,
                 FEATURE_GRAD: tl.constexpr, IO_DTYPE: tl.constexpr, DOT_FP32: tl.constexpr,
                 EVEN_AB: tl.constexpr, EVEN_C: tl.constexpr, CHUNK: tl.constexpr):
    """The chunk loop of `_chunk_walk` over chunks first .. first + count - 1 (in reverse when
    REVERSE) from `state`; returns the state after them. SEPARABLE: the intra-chunk decay is
    row_scale[i] * column_scale[j] (else an exponential per score, and the loop is not pipelined:
    such fast decays are rare, and a second ring of chunk tiles would double the shared memory)."""
    local = tl.arange(0, CHUNK)
    position = local.to(tl.float32)
    for step in tl.range(0, count, num_stages=None if SEPARABLE else 1):
        if REVERSE:
            index = first + count - 1 - step
        else:
            index = first + step
        start = index * CHUNK
        rows = start + local
        valid = rows < length
        span = tl.minimum(length - start, CHUNK)  # tokens in this chunk (the tail may be short)
        a = _load_tile(A, base_a, rows, length, cols_ab, dim_ab, stride_an, stride_ad, FEATURE_A, IO_DTYPE,
                       DOT_FP32, EVEN_AB)
        b = _load_tile(B, base_b, rows, length, cols_ab, dim_ab, stride_bn, stride_bd, FEATURE_B, IO_DTYPE,
                       DOT_FP32, EVEN_AB)
        c = _load_tile(C, base_c, rows, length, cols_c, dim_c, stride_cn, stride_cd, FEATURE_C, IO_DTYPE,
                       DOT_FP32, EVEN_C)
        scores = tl.dot(a, tl.trans(b))
        if REVERSE:
            keep = local[None, :] >= local[:, None]
        else:
            keep = local[None, :] <= local[:, None]
        inter = tl.dot(a, _operand(state, IO_DTYPE, DOT_FP32))  # the earlier chunks, through the state
        if HAS_DECAY:
            if SEPARABLE:
                scores = tl.where(keep, scores * row_scale[:, None] * column_scale[None, :], 0.0)
            else:
                distance = tl.abs(local[:, None] - local[None, :]).to(tl.float32)
                scores = tl.where(keep, scores * tl.math.exp2(-rate * distance), 0.0)
            # the state reaches row i decayed by i + 1 steps (reversed: by its distance to the end)
            if REVERSE:
                lead = tl.where(valid, span - 1 - local, 0).to(tl.float32)
                tail = position + 1.0
            else:
                lead = position + 1.0
                tail = tl.where(valid, span - 1 - local, 0).to(tl.float32)
            inter = inter * tl.math.exp2(-rate * lead)[:, None]
            # row j enters the next state decayed by its distance to the chunk's end (start, reversed)
            c_update = _operand(c.to(tl.float32) * tl.math.exp2(-rate * tail)[:, None], IO_DTYPE, DOT_FP32)
            state = state * tl.math.exp2(-rate * span.to(tl.float32))
        else:
            scores = tl.where(keep, scores, 0.0)
            c_update = c
        out = tl.dot(_operand(scores, IO_DTYPE, DOT_FP32), c, inter) * out_scale
        out_mask = valid[:, None] & (cols_c[None, :] < dim_c)
        if FEATURE_GRAD:
            # the walk computed the gradient of phi(X); chain rule through elu(x) + 1
            x = tl.load(X + base_x + rows[:, None] * stride_xn + cols_c[None, :] * stride_xd,
                        mask=out_mask, other=0.0).to(tl.float32)
            out = out * tl.where(x > 0, 1.0, tl.exp(tl.minimum(x, 0.0)))
        tl.store(Out + base_o + rows[:, None] * stride_on + cols_c[None, :] * stride_od,
                 out.to(Out.dtype.element_ty), mask=out_mask)
        state = tl.dot(tl.trans(b), c_update, state)

    return state


# Sizes that vary from call to call but do not shape the code (no vectorisation depends on them) are
# not specialised, so a new batch, head count or length reuses the compiled kernel instead of
# compiling another (Triton specialises integers equal to 1 or divisible by 16 by default).
_SIZES = ["heads", "length", "dim_ab", "dim_c", "segment_chunks"]


@triton.jit(do_not_specialize=_SIZES + ["group_a", "group_b", "group_c", "group_x", "has_state_in"])
def _chunk_walk(
    A, B, C, Out, X, StateIn, StateOut, Slope,
    stride_ab, stride_ah, stride_an, stride_ad,
    stride_bb, stride_bh, stride_bn, stride_bd,
    stride_cb, stride_ch, stride_cn, stride_cd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_ib, stride_ih, stride_is, stride_ir, stride_ic,
    stride_fb, stride_fh, stride_fr, stride_fc,
    heads, group_a, group_b, group_c, group_x, length, dim_ab, dim_c, out_scale, state_in_scale, state_out_scale,
    segment_chunks, has_state_in,
    REVERSE: tl.constexpr, HAS_DECAY: tl.constexpr, FEATURE_A: tl.constexpr, FEATURE_B: tl.constexpr,
    FEATURE_C: tl.constexpr, FEATURE_GRAD: tl.constexpr, IO_DTYPE: tl.constexpr, DOT_FP32: tl.constexpr,
    EVEN_AB: tl.constexpr, EVEN_C: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_AB: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """out = out_scale (A·S + mask(A·Bᵀ)·C) chunk by chunk, S += Bᵀ·C (with decay); see the module
    docstring. The state is carried without B's scale (a walk's scales multiply its outputs, so
    the loaded tiles feed the dots as they are): an initial state is multiplied by
    state_in_scale when loaded, the final one by state_out_scale when stored. Rows of A, B, C,
    Out and X index heads through their group (query head h reads h // group)."""
    pid_c = tl.program_id(0)
    segment = tl.program_id(1)
    bh = tl.program_id(2)
    batch = (bh // heads).to(tl.int64)
    head = bh % heads
    base_a = batch * stride_ab + (head // group_a).to(tl.int64) * stride_ah
    base_b = batch * stride_bb + (head // group_b).to(tl.int64) * stride_bh
    base_c = batch * stride_cb + (head // group_c).to(tl.int64) * stride_ch
    base_o = batch * stride_ob + head.to(tl.int64) * stride_oh
    base_x = batch * stride_xb + (head // group_x).to(tl.int64) * stride_xh
    cols_ab = tl.arange(0, BLOCK_AB)
    cols_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    local = tl.arange(0, CHUNK)
    state_mask = (cols_ab[:, None] < dim_ab) & (cols_c[None, :] < dim_c)

    # whether a starting state is read is a runtime flag, and the end state is always stored (to a
    # one-element dummy with zero strides when nobody wants it): fewer variants to compile, no
    # cost in the chunk loop
    start_state = StateIn + batch * stride_ib + head.to(tl.int64) * stride_ih + segment.to(tl.int64) * stride_is
    state = tl.load(start_state + cols_ab[:, None] * stride_ir + cols_c[None, :] * stride_ic,
                    mask=state_mask, other=0.0)
    state = tl.where(has_state_in != 0, state * state_in_scale, 0.0)
    rate = 0.0
    separable = True
    row_scale = tl.full([CHUNK], 1.0, tl.float32)
    column_scale = row_scale
    if HAS_DECAY:
        rate = tl.load(Slope + head).to(tl.float32) * 1.4426950408889634  # log2 units per token
        # g^(i-j) (g^(j-i) reversed) = row_scale[i] * column_scale[j]: two vectors instead of an
        # exponential per score, while the column scale stays far from fp32's range (2^100)
        position = local.to(tl.float32)
        growing = tl.math.exp2(tl.minimum(rate * position, 126.0))  # clamped: unused when not separable
        if REVERSE:
            row_scale = growing
            column_scale = tl.math.exp2(-rate * position)
        else:
            row_scale = tl.math.exp2(-rate * position)
            column_scale = growing
        separable = rate * CHUNK < 100.0

    chunks = tl.cdiv(length, CHUNK)
    first = segment * segment_chunks
    count = tl.minimum(segment_chunks, chunks - first)
    # Whether the decay is separable is known only at run time (it depends on the slope), but a
    # runtime branch INSIDE the chunk loop makes Triton 3.6's software pipeliner fail on sm_90
    # ("PassManager::run failed" in TritonGPUPipeline; 3.9 copes): so the branch picks one of two
    # loops, each pipelined on its own, and the common separable one pays nothing for the other.
    if separable:
        state = _walk_chunks(
            A, B, C, Out, X, base_a, base_b, base_c, base_o, base_x,
            stride_an, stride_ad, stride_bn, stride_bd, stride_cn, stride_cd, stride_on, stride_od,
            stride_xn, stride_xd, length, dim_ab, dim_c, first, count, state, out_scale,
            rate, row_scale, column_scale, cols_ab, cols_c,
            REVERSE, HAS_DECAY, True, FEATURE_A, FEATURE_B, FEATURE_C, FEATURE_GRAD, IO_DTYPE, DOT_FP32,
            EVEN_AB, EVEN_C, CHUNK)
    else:
        state = _walk_chunks(
            A, B, C, Out, X, base_a, base_b, base_c, base_o, base_x,
            stride_an, stride_ad, stride_bn, stride_bd, stride_cn, stride_cd, stride_on, stride_od,
            stride_xn, stride_xd, length, dim_ab, dim_c, first, count, state, out_scale,
            rate, row_scale, column_scale, cols_ab, cols_c,
            REVERSE, HAS_DECAY, False, FEATURE_A, FEATURE_B, FEATURE_C, FEATURE_GRAD, IO_DTYPE, DOT_FP32,
            EVEN_AB, EVEN_C, CHUNK)

    final = StateOut + batch * stride_fb + head.to(tl.int64) * stride_fh
    tl.store(final + cols_ab[:, None] * stride_fr + cols_c[None, :] * stride_fc, state * state_out_scale,
             mask=state_mask)


@triton.jit(do_not_specialize=_SIZES + ["group_b", "group_c"])
def _segment_sums(
    B, C, Sums, Slope,
    stride_bb, stride_bh, stride_bn, stride_bd,
    stride_cb, stride_ch, stride_cn, stride_cd,
    stride_sb, stride_sh, stride_ss, stride_sr, stride_sc,
    heads, group_b, group_c, length, dim_ab, dim_c, segment_chunks,
    REVERSE: tl.constexpr, HAS_DECAY: tl.constexpr, FEATURE_B: tl.constexpr, FEATURE_C: tl.constexpr,
    IO_DTYPE: tl.constexpr, DOT_FP32: tl.constexpr, EVEN_AB: tl.constexpr, EVEN_C: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_AB: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Each segment's own contribution to the state at its end (its start, reversed):
    sum over its tokens of g^(distance) · B_tᵀ C_t (without B's scale, as the walk carries it).
    No chunk depends on another: one long dot."""
    pid_c = tl.program_id(0)
    segment = tl.program_id(1)
    bh = tl.program_id(2)
    batch = (bh // heads).to(tl.int64)
    head = bh % heads
    base_b = batch * stride_bb + (head // group_b).to(tl.int64) * stride_bh
    base_c = batch * stride_cb + (head // group_c).to(tl.int64) * stride_ch
    cols_ab = tl.arange(0, BLOCK_AB)
    cols_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    local = tl.arange(0, CHUNK)
    rate = 0.0
    if HAS_DECAY:
        rate = tl.load(Slope + head).to(tl.float32) * 1.4426950408889634
    chunks = tl.cdiv(length, CHUNK)
    first = segment * segment_chunks
    count = tl.minimum(segment_chunks, chunks - first)
    segment_start = first * CHUNK
    segment_end = tl.minimum((first + count) * CHUNK, length)
    total = tl.zeros([BLOCK_AB, BLOCK_C], tl.float32)
    for index in range(first, first + count):
        rows = index * CHUNK + local
        b = _load_tile(B, base_b, rows, length, cols_ab, dim_ab, stride_bn, stride_bd, FEATURE_B, IO_DTYPE,
                       DOT_FP32, EVEN_AB)
        c = _load_tile(C, base_c, rows, length, cols_c, dim_c, stride_cn, stride_cd, FEATURE_C, IO_DTYPE,
                       DOT_FP32, EVEN_C)
        if HAS_DECAY:
            if REVERSE:
                age = rows - segment_start + 1
            else:
                age = segment_end - 1 - rows
            age = tl.where(rows < length, age, 0).to(tl.float32)
            c = _operand(c.to(tl.float32) * tl.math.exp2(-rate * age)[:, None], IO_DTYPE, DOT_FP32)
        total = tl.dot(tl.trans(b), c, total)
    out = Sums + batch * stride_sb + head.to(tl.int64) * stride_sh + segment.to(tl.int64) * stride_ss
    tl.store(out + cols_ab[:, None] * stride_sr + cols_c[None, :] * stride_sc, total,
             mask=(cols_ab[:, None] < dim_ab) & (cols_c[None, :] < dim_c))


@triton.jit(do_not_specialize=["heads", "length", "dim_ab", "dim_c", "segments", "segment_tokens",
                               "has_state_in", "has_decay"])
def _segment_scan(
    Sums, StateIn, StateOut, Slope,
    stride_sb, stride_sh, stride_ss, stride_sr, stride_sc,
    stride_ib, stride_ih, stride_ir, stride_ic,
    stride_fb, stride_fh, stride_fr, stride_fc,
    heads, length, dim_ab, dim_c, segments, segment_tokens, state_in_scale, state_out_scale,
    has_state_in, has_decay,
    REVERSE: tl.constexpr, BLOCK_AB: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """In place, segment by segment (backward in time when REVERSE): replace each segment's sum by
    the state it starts from, S = g^len · S + sum, from the initial state; store the final one."""
    pid_c = tl.program_id(0)
    bh = tl.program_id(1)
    batch = (bh // heads).to(tl.int64)
    head = bh % heads
    cols_ab = tl.arange(0, BLOCK_AB)
    cols_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (cols_ab[:, None] < dim_ab) & (cols_c[None, :] < dim_c)
    # a tiny sequential kernel: flags and the decay at runtime (one compiled variant per direction)
    start = StateIn + batch * stride_ib + head.to(tl.int64) * stride_ih
    state = tl.load(start + cols_ab[:, None] * stride_ir + cols_c[None, :] * stride_ic, mask=mask, other=0.0)
    state = tl.where(has_state_in != 0, state * state_in_scale, 0.0)
    # without decay Slope is a one-element dummy: read its element 0 and use rate 0
    rate = tl.where(has_decay != 0, tl.load(Slope + head * has_decay).to(tl.float32) * 1.4426950408889634, 0.0)
    sums = Sums + batch * stride_sb + head.to(tl.int64) * stride_sh
    offsets = cols_ab[:, None] * stride_sr + cols_c[None, :] * stride_sc
    for step in range(0, segments):
        if REVERSE:
            segment = segments - 1 - step
        else:
            segment = step
        where = sums + segment.to(tl.int64) * stride_ss + offsets
        own = tl.load(where, mask=mask, other=0.0)
        tl.store(where, state, mask=mask)
        span = tl.minimum(segment_tokens, length - segment * segment_tokens).to(tl.float32)
        state = state * tl.math.exp2(-rate * span) + own
    final = StateOut + batch * stride_fb + head.to(tl.int64) * stride_fh
    tl.store(final + cols_ab[:, None] * stride_fr + cols_c[None, :] * stride_fc, state * state_out_scale,
             mask=mask)


# -- launchers --------------------------------------------------------------------------------------------
_DUMMIES: dict = {}


def _fp32_dummy(device):
    """A one-element fp32 tensor for state pointers a launch does not read or write: the same
    pointer type whether a state is there or not, so both share one compiled kernel."""
    import torch

    key = str(device)
    if key not in _DUMMIES:
        _DUMMIES[key] = torch.zeros(1, dtype=torch.float32, device=device)
    return _DUMMIES[key]


def _strides(tensor, count: int) -> tuple:
    """The tensor's strides, or zeros for a missing tensor (its pointer is never read)."""
    return tuple(tensor.stride()) if tensor is not None else (0,) * count


class Walk:
    """One chunked walk for one set of shapes, strides and options: its launches are built on the
    first run (Triton binds and specialises every argument once) and replayed after through the
    compiled launcher (kernels.launch.TritonLaunch), so a call costs the launches and little else.

    Tensors are [batch, heads (or heads / group), length, dim] of any strides: a, b [.., dim_ab],
    c [.., dim_c], out [batch, heads, length, dim_c] (written). initial: the starting state
    [batch, heads, dim_ab, dim_c] (fp32, any strides) or None (zeros); final: where to store the
    end state, or None. starts: segment starting states already known [batch, heads, segments,
    dim_ab, dim_c] for `segment_tokens`-long segments (the forward's, reused by the backward).
    keep_starts: `run` returns the segment starts it computed (None when the walk has one
    segment). The dots run in a's dtype.
    """

    def __init__(self, config, *, heads: int, groups: tuple[int, int, int], length: int, scale_a: float,
                 scale_b: float, features: tuple[int, int, int], reverse: bool, group_x: int = 1,
                 segment_tokens: int | None = None, keep_starts: bool = False):
        self.config, self.heads, self.groups, self.length = config, heads, groups, length
        self.scale_a, self.scale_b, self.features, self.reverse = float(scale_a), float(scale_b), features, reverse
        self.group_x, self.keep_starts = group_x, keep_starts
        segment_tokens = config.SEGMENT if segment_tokens is None else segment_tokens
        if not segment_tokens or segment_tokens >= length:
            self.segment_tokens, self.segments, self.segment_chunks = 0, 1, triton.cdiv(length, config.CHUNK)
        else:
            if segment_tokens % config.CHUNK:
                raise ShapeError(f"linear attention: segments of {segment_tokens} tokens are not whole chunks "
                                 f"of {config.CHUNK}")
            self.segment_tokens = segment_tokens
            self.segments = triton.cdiv(length, segment_tokens)
            self.segment_chunks = segment_tokens // config.CHUNK
        self.launches: dict[str, TritonLaunch] = {}
        self._fast = None  # set by the first run: what later runs need besides their tensors

    def _launch(self, kernel, grid, *args, **options) -> None:
        name = name_of(kernel)
        launch = self.launches.get(name)
        if launch is None:
            if name == "_chunk_walk":
                options["on_compile"] = lambda compiled: remember_launch("_chunk_walk", compiled)
            launch = self.launches[name] = TritonLaunch(kernel, grid, *args, **options)
        launch(*[args[i] for i in launch.tensor_slots])

    def run(self, a, b, c, out, *, slope=None, grad_x=None, initial=None, final=None, starts=None):
        """Launch the walk (and its segment sums and scan). The first call binds every launch
        (`_bind_and_run`); later calls of the same plan pass only their tensors, in each kernel's
        parameter order. Which of slope, grad_x, initial, final and starts are given must not
        change within a plan (the plan's key says so)."""
        fast = self._fast
        if fast is None:
            return self._bind_and_run(a, b, c, out, slope=slope, grad_x=grad_x, initial=initial, final=final,
                                      starts=starts)
        import torch

        starts_shape, state_dummy = fast
        launches = self.launches
        if starts_shape is not None and starts is None:
            starts = torch.empty(starts_shape, dtype=torch.float32, device=a.device)
            launches["_segment_sums"](b, c, starts, slope if slope is not None else out)
            launches["_segment_scan"](starts, initial if initial is not None else state_dummy,
                                      final if final is not None else state_dummy,
                                      slope if slope is not None else state_dummy)
            final = None
        state_in = starts if self.segments > 1 else initial
        launches["_chunk_walk"](a, b, c, out, grad_x if grad_x is not None else out,
                                state_in if state_in is not None else state_dummy,
                                final if final is not None else state_dummy, slope if slope is not None else out)
        return starts if (self.keep_starts and self.segments > 1) else None

    def _bind_and_run(self, a, b, c, out, *, slope=None, grad_x=None, initial=None, final=None, starts=None):
        import torch

        if interpreting():
            patch_interpreter()
        config, heads, groups, length = self.config, self.heads, self.groups, self.length
        batch = a.shape[0]
        dim_ab, dim_c = a.shape[-1], c.shape[-1]
        block_ab = padded_head_dim(dim_ab)
        block_c = min(config.BLOCK_C, padded_head_dim(dim_c))
        column_blocks = triton.cdiv(dim_c, block_c)
        decay = slope is not None
        element_type = io_dtype(a)
        dot_fp32 = interpreter_needs_fp32_dots("bf16" if a.dtype == torch.bfloat16 else "fp16")
        dummy = out  # a pointer for arguments the constexpr flags never read
        state_dummy = _fp32_dummy(a.device)  # for state pointers the runtime flags leave unread
        segments = self.segments
        self._fast = ((batch, heads, segments, dim_ab, dim_c) if segments > 1 and starts is None else None,
                      state_dummy)
        if segments > 1 and starts is None:
            starts = torch.empty(batch, heads, segments, dim_ab, dim_c, dtype=torch.float32, device=a.device)
            self._launch(
                _segment_sums, (column_blocks, segments, batch * heads),
                b, c, starts, slope if decay else dummy,
                *b.stride(), *c.stride(), *starts.stride(),
                heads, groups[1], groups[2], length, dim_ab, dim_c, self.segment_chunks,
                REVERSE=self.reverse, HAS_DECAY=decay, FEATURE_B=self.features[1], FEATURE_C=self.features[2],
                IO_DTYPE=element_type, DOT_FP32=dot_fp32, EVEN_AB=dim_ab == block_ab, EVEN_C=dim_c % block_c == 0,
                CHUNK=config.CHUNK, BLOCK_AB=block_ab, BLOCK_C=block_c,
                num_warps=config.num_warps, num_stages=config.num_stages)
            self._launch(
                _segment_scan, (column_blocks, batch * heads),
                starts, initial if initial is not None else state_dummy, final if final is not None else state_dummy,
                slope if decay else state_dummy,
                *starts.stride(), *_strides(initial, 4), *_strides(final, 4),
                heads, length, dim_ab, dim_c, segments, self.segment_tokens, 1.0 / self.scale_b, self.scale_b,
                int(initial is not None), int(decay),
                REVERSE=self.reverse, BLOCK_AB=block_ab, BLOCK_C=block_c, num_warps=4)
            final = None  # the scan stored it
        elif segments > 1 and final is not None:
            raise ShapeError("linear attention: a walk from given segment starts cannot also give the final state")
        if segments > 1:
            state_in, state_strides = starts, tuple(starts.stride())
        elif initial is not None:
            state_in, state_strides = initial, tuple(initial.stride()[:2]) + (0,) + tuple(initial.stride()[2:])
        else:
            state_in, state_strides = None, (0,) * 5
        self._launch(
            _chunk_walk, (column_blocks, segments, batch * heads),
            a, b, c, out, grad_x if grad_x is not None else dummy,
            state_in if state_in is not None else state_dummy, final if final is not None else state_dummy,
            slope if decay else dummy,
            *a.stride(), *b.stride(), *c.stride(), *out.stride(), *_strides(grad_x, 4),
            *state_strides, *_strides(final, 4),
            heads, groups[0], groups[1], groups[2], self.group_x, length, dim_ab, dim_c,
            self.scale_a * self.scale_b, 1.0 if segments > 1 else 1.0 / self.scale_b, self.scale_b,
            self.segment_chunks, int(state_in is not None),
            REVERSE=self.reverse, HAS_DECAY=decay, FEATURE_A=self.features[0], FEATURE_B=self.features[1],
            FEATURE_C=self.features[2], FEATURE_GRAD=grad_x is not None, IO_DTYPE=element_type, DOT_FP32=dot_fp32,
            EVEN_AB=dim_ab == block_ab, EVEN_C=dim_c % block_c == 0,
            CHUNK=config.CHUNK, BLOCK_AB=block_ab, BLOCK_C=block_c,
            num_warps=config.num_warps, num_stages=config.num_stages)
        return starts if (self.keep_starts and segments > 1) else None


# -- checked entry points -----------------------------------------------------------------------------------
def check_linear_inputs(q, k, v, *, kernel: str, decay=None, feature_map=None, scale=None,
                        initial_state=None) -> Problem:
    """The (causal, self-attention) Problem of q [B, Hq, N, D], k [B, Hkv, N, D],
    v [B, Hkv, N, Dv], or a ShapeError naming what is wrong with any input."""
    import torch

    problem = check_attention_inputs(q, k, v, kernel=kernel, causal=True, scale=scale)
    if problem.q_len != problem.kv_len:
        raise ShapeError(f"{kernel}: linear attention is self-attention: q has {problem.q_len} tokens, "
                         f"k and v {problem.kv_len}")
    if feature_map not in FEATURE_MAPS:
        raise ShapeError(f"{kernel}: feature_map must be one of {list(FEATURE_MAPS)}, got {feature_map!r}")
    if decay is not None:
        if not isinstance(decay, torch.Tensor) or tuple(decay.shape) != (problem.q_heads,) \
                or not decay.dtype.is_floating_point or decay.device != q.device:
            raise ShapeError(f"{kernel}: decay must be a float tensor of {problem.q_heads} per-head slopes "
                             f"(g = exp(-slope)) on {q.device}; got "
                             f"{getattr(decay, 'shape', type(decay).__name__)} "
                             f"{getattr(decay, 'dtype', '')} on {getattr(decay, 'device', '?')}")
    if initial_state is not None:
        want = (problem.batch, problem.q_heads, problem.head_dim, problem.v_head_dim)
        if not isinstance(initial_state, torch.Tensor) or tuple(initial_state.shape) != want \
                or not initial_state.dtype.is_floating_point or initial_state.device != q.device:
            raise ShapeError(f"{kernel}: initial_state must be a float tensor [B, Hq, D, Dv] = {want} on "
                             f"{q.device}; got {getattr(initial_state, 'shape', type(initial_state).__name__)}")
    return problem


def _resolve(kernel: str, config, problem, device):
    spec = KERNELS[kernel]
    limits = device_limits(device)
    config = spec.resolve_config(config, problem, limits)
    spec.validate(config, problem, limits)
    return config


def _scale(scale, head_dim: int) -> float:
    return head_dim ** -0.5 if scale is None else float(scale)


def _slopes(decay):
    return None if decay is None else decay.detach().float().contiguous()


def _state(state):
    return None if state is None else state.detach().float()


def _key(tensor):
    return None if tensor is None else tensor_key(tensor)


class ForwardPlan:
    """A forward call of one key, decided once: the checked problem, the resolved config, the
    walk (docs/kernels.md § Launch plans)."""

    def __init__(self, problem: Problem, config: LinearConfig, feature_map, scale, keep_starts: bool):
        self.problem, self.config = problem, config
        feature = FEATURE_MAPS[feature_map]
        self.walk = Walk(config, heads=problem.q_heads, groups=(1, problem.group_size, problem.group_size),
                         length=problem.q_len, scale_a=_scale(scale, problem.head_dim), scale_b=1.0,
                         features=(feature, feature, 0), reverse=False, keep_starts=keep_starts)
        self.backward_configs: dict = {}  # what the autograd Function resolved, per requested config

    def run(self, q, k, v, decay, initial_state, output_final_state: bool):
        import torch

        p = self.problem
        out = torch.empty(p.batch, p.q_heads, p.q_len, p.v_head_dim, dtype=q.dtype, device=q.device)
        final = (torch.empty(p.batch, p.q_heads, p.head_dim, p.v_head_dim, dtype=torch.float32, device=q.device)
                 if output_final_state else None)
        starts = self.walk.run(q, k, v, out, slope=_slopes(decay), initial=_state(initial_state), final=final)
        return out, final, starts


FORWARD_PLANS = plan_cache("linear-fwd")
BACKWARD_PLANS = plan_cache("linear-bwd")


def forward_plan(q, k, v, decay=None, feature_map=None, scale=None, initial_state=None, config=None,
                 keep_starts: bool = False, output_final_state: bool = False) -> ForwardPlan:
    """The cached plan for these tensors and options, built (inputs checked, config resolved) on
    first use."""
    key, plan = FORWARD_PLANS.find(lambda: (tensor_key(q), tensor_key(k), tensor_key(v), _key(decay),
                                            feature_map, scale, _key(initial_state), config, keep_starts,
                                            output_final_state))
    if plan is not None:
        return plan
    problem = check_linear_inputs(q, k, v, kernel="linear-fwd", decay=decay, feature_map=feature_map,
                                  scale=scale, initial_state=initial_state)
    config = _resolve("linear-fwd", config, problem, q.device)
    return FORWARD_PLANS.store(key, ForwardPlan(problem, config, feature_map, scale, keep_starts))


def linear_forward(q, k, v, *, decay=None, feature_map: str | None = None, scale: float | None = None,
                   initial_state=None, output_final_state: bool = False, config: LinearConfig | None = None,
                   keep_starts: bool = False):
    """Chunked causal linear attention. q [B, Hq, N, D], k [B, Hkv, N, D], v [B, Hkv, N, Dv], any
    strides, fp16 or bf16; decay [Hq] per-head slopes (g = exp(-slope)) or None; feature_map None
    or "elu1" (applied to q and k in the kernel); scale defaults to D^-0.5; initial_state
    [B, Hq, D, Dv] or None. Returns (out [B, Hq, N, Dv] in q's dtype, final state [B, Hq, D, Dv]
    fp32 or None, the segment starts kept for the backward or None).

    Raises ShapeError for bad inputs and ConfigError for a config that cannot run, before any
    launch. Checks, config and launches are decided once per shape (a launch plan).
    """
    plan = forward_plan(q, k, v, decay, feature_map, scale, initial_state, config, keep_starts, output_final_state)
    return plan.run(q, k, v, decay, initial_state, output_final_state)


class BackwardPlan:
    """A backward call of one key, decided once: problem, config and the three walks (dQ forward
    in time from the state; dV and dK backward in time from the state's gradient)."""

    def __init__(self, problem: Problem, config: LinearBackwardConfig, feature_map, scale, use_starts: bool,
                 starts_segment: int):
        self.problem, self.config, self.use_starts = problem, config, use_starts
        feature = FEATURE_MAPS[feature_map]
        self.feature = feature
        scale = _scale(scale, problem.head_dim)
        heads, group, length = problem.q_heads, problem.group_size, problem.q_len
        self.dq = Walk(config, heads=heads, groups=(1, group, group), length=length, scale_a=scale, scale_b=1.0,
                       features=(0, 0, feature), reverse=False, group_x=1,
                       segment_tokens=starts_segment if use_starts else None)
        self.dv = Walk(config, heads=heads, groups=(group, 1, 1), length=length, scale_a=1.0, scale_b=scale,
                       features=(feature, feature, 0), reverse=True, keep_starts=True)
        self.dk = Walk(config, heads=heads, groups=(group, 1, 1), length=length, scale_a=1.0, scale_b=scale,
                       features=(0, 0, feature), reverse=True, group_x=group)

    def run(self, do, q, k, v, decay, initial_state, grad_final_state, starts, want_initial_grad: bool):
        import torch

        p = self.problem
        group, feature = p.group_size, self.feature
        slope = _slopes(decay)
        initial, grad_final = _state(initial_state), _state(grad_final_state)
        dq = torch.empty(p.batch, p.q_heads, p.q_len, p.head_dim, dtype=q.dtype, device=q.device)
        self.dq.run(do, v, k, dq, slope=slope, grad_x=q if feature else None,
                    initial=initial.transpose(-1, -2) if initial is not None else None,
                    starts=starts.transpose(-1, -2) if self.use_starts else None)
        # dK and dV per query head (summed over each key/value head's group below), fp32 when summed.
        partial = q.dtype if group == 1 else torch.float32
        dk = torch.empty(p.batch, p.q_heads, p.q_len, p.head_dim, dtype=partial, device=q.device)
        dv = torch.empty(p.batch, p.q_heads, p.q_len, p.v_head_dim, dtype=partial, device=q.device)
        grad_initial = (torch.empty(p.batch, p.q_heads, p.head_dim, p.v_head_dim, dtype=torch.float32,
                                    device=q.device) if want_initial_grad else None)
        gradient_starts = self.dv.run(k, q, do, dv, slope=slope, initial=grad_final, final=grad_initial)
        self.dk.run(v, do, q, dk, slope=slope, grad_x=k if feature else None,
                    initial=grad_final.transpose(-1, -2) if grad_final is not None else None,
                    starts=gradient_starts.transpose(-1, -2) if gradient_starts is not None else None)
        if group > 1:
            shape = (p.batch, p.kv_heads, group, p.q_len)
            dk = dk.view(*shape, p.head_dim).sum(2).to(k.dtype)
            dv = dv.view(*shape, p.v_head_dim).sum(2).to(v.dtype)
        return dq, dk, dv, grad_initial


def linear_backward(do, q, k, v, *, decay=None, feature_map: str | None = None, scale: float | None = None,
                    initial_state=None, grad_final_state=None, starts=None, starts_segment: int = 0,
                    config: LinearBackwardConfig | None = None, want_initial_grad: bool = False):
    """dq, dk, dv (inputs' dtypes) and the initial state's gradient (fp32, or None unless
    want_initial_grad) of linear_forward's output for the output gradient do [B, Hq, N, Dv] and
    the final state's gradient grad_final_state [B, Hq, D, Dv] (or None). starts: the forward's
    segment starts for segments of starts_segment tokens (used when config.store_states)."""
    if do.dtype != q.dtype:
        do = do.to(q.dtype)
    key, plan = BACKWARD_PLANS.find(lambda: (
        tensor_key(do), tensor_key(q), tensor_key(k), tensor_key(v), _key(decay), feature_map, scale,
        _key(initial_state), _key(grad_final_state), _key(starts), starts_segment, config, want_initial_grad))
    if plan is None:
        problem = check_linear_inputs(q, k, v, kernel="linear-bwd", decay=decay, feature_map=feature_map,
                                      scale=scale, initial_state=initial_state)
        if tuple(do.shape) != (problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim):
            raise ShapeError(f"linear-bwd: the output gradient has shape {tuple(do.shape)}, the output "
                             f"{(problem.batch, problem.q_heads, problem.q_len, problem.v_head_dim)}")
        if grad_final_state is not None and tuple(grad_final_state.shape) != (
                problem.batch, problem.q_heads, problem.head_dim, problem.v_head_dim):
            raise ShapeError(f"linear-bwd: the final state's gradient has shape {tuple(grad_final_state.shape)}")
        config = _resolve("linear-bwd", config, problem, q.device)
        use_starts = bool(config.store_states and starts is not None and starts_segment
                          and starts_segment % config.CHUNK == 0)
        plan = BACKWARD_PLANS.store(key, BackwardPlan(problem, config, feature_map, scale, use_starts,
                                                      starts_segment))
    return plan.run(do, q, k, v, decay, initial_state, grad_final_state, starts, want_initial_grad)


def _make_function():
    import torch

    class _LinearAttentionFunction(torch.autograd.Function):
        """out, final_state = linear attention; gradients for q, k, v and the initial state."""

        @staticmethod
        def forward(ctx, q, k, v, decay, initial_state, feature_map, scale, output_final_state,
                    config, backward_config):
            plan = forward_plan(q, k, v, decay, feature_map, scale, initial_state, config, keep_starts=True,
                                output_final_state=output_final_state)
            resolved = plan.backward_configs.get(backward_config)
            if resolved is None:
                resolved = plan.backward_configs[backward_config] = _resolve(
                    "linear-bwd", backward_config, plan.problem, q.device)
            out, final, starts = plan.run(q, k, v, decay, initial_state, output_final_state)
            if not resolved.store_states:
                starts = None
            ctx.save_for_backward(q, k, v, decay, initial_state, starts)
            ctx.options = (feature_map, scale, resolved, plan.config.SEGMENT)
            return out, final

        @staticmethod
        def backward(ctx, grad_out, grad_final):
            q, k, v, decay, initial_state, starts = ctx.saved_tensors
            feature_map, scale, backward_config, segment = ctx.options
            dq, dk, dv, d_initial = linear_backward(
                grad_out.contiguous(), q, k, v, decay=decay, feature_map=feature_map, scale=scale,
                initial_state=initial_state, grad_final_state=grad_final, starts=starts,
                starts_segment=segment, config=backward_config,
                want_initial_grad=initial_state is not None and ctx.needs_input_grad[4])
            if d_initial is not None:
                d_initial = d_initial.to(initial_state.dtype)
            return dq, dk, dv, None, d_initial, None, None, None, None, None

    return _LinearAttentionFunction


_FUNCTION = None


def linear_attention(q, k, v, *, decay=None, feature_map: str | None = None, scale: float | None = None,
                     initial_state=None, output_final_state: bool = False,
                     config: LinearConfig | None = None, backward_config: LinearBackwardConfig | None = None):
    """Causal linear attention by the chunked kernels, differentiable in q, k, v and initial_state:

        o_i = scale * (sum_{j <= i} g^(i-j) (phi(q_i)·phi(k_j)) v_j + g^(i+1) phi(q_i) S0)

    q [B, Hq, N, D], k [B, Hkv, N, D], v [B, Hkv, N, Dv] (torch SDPA's layout, any strides; GQA
    when Hkv divides Hq), fp16 or bf16. decay: [Hq] slopes, g = exp(-slope) per query head
    (Lightning Attention, RetNet), or None (no decay). feature_map: None or "elu1". scale:
    default D^-0.5. initial_state: [B, Hq, D, Dv] or None. Returns (out [B, Hq, N, Dv], final
    state [B, Hq, D, Dv] fp32 when output_final_state, else None): the state a decode step
    (`linear_attention_decode`) continues from.
    """
    global _FUNCTION
    import torch

    output_final_state = check_flag(output_final_state, "output_final_state", "linear-fwd")  # 'no' was truthy
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (q, k, v, initial_state))
    if not needs_grad:
        out, final, _ = linear_forward(q, k, v, decay=decay, feature_map=feature_map, scale=scale,
                                       initial_state=initial_state, output_final_state=output_final_state,
                                       config=config)
        return out, final
    if _FUNCTION is None:
        _FUNCTION = _make_function()
    return _FUNCTION.apply(q, k, v, decay, initial_state, feature_map, scale, output_final_state,
                           config, backward_config)


def launch_forward_from_inputs(config: LinearConfig, inputs: dict):
    """The registry's launcher: (out, final state) for KernelSpec.make_inputs' inputs."""
    out, final, _ = linear_forward(inputs["q"], inputs["k"], inputs["v"], decay=inputs.get("slope"),
                                   feature_map=inputs.get("feature_map"), scale=inputs.get("scale"),
                                   initial_state=inputs.get("initial_state"), output_final_state=True,
                                   config=config)
    return out, final


def launch_backward_from_inputs(config: LinearBackwardConfig, inputs: dict):
    """The registry's launcher: (dq, dk, dv) for inputs with "do"; the forward runs once on the
    first call (its segment starts kept when the config stores states)."""
    key = ("starts", config.store_states)
    if key not in inputs:
        forward = inputs.get("forward_config") or KERNELS["linear-fwd"].resolve_config(
            None, check_linear_inputs(inputs["q"], inputs["k"], inputs["v"], kernel="linear-fwd"))
        _, _, starts = linear_forward(inputs["q"].detach(), inputs["k"].detach(), inputs["v"].detach(),
                                      decay=inputs.get("slope"), feature_map=inputs.get("feature_map"),
                                      scale=inputs.get("scale"), config=forward, keep_starts=config.store_states)
        inputs[key] = (starts, forward.SEGMENT)
    starts, segment = inputs[key]
    dq, dk, dv, _ = linear_backward(inputs["do"], inputs["q"].detach(), inputs["k"].detach(),
                                    inputs["v"].detach(), decay=inputs.get("slope"),
                                    feature_map=inputs.get("feature_map"), scale=inputs.get("scale"),
                                    starts=starts, starts_segment=segment, config=config)
    return dq, dk, dv


__all__ = ["Walk", "forward_plan", "linear_attention", "linear_backward", "linear_forward",
           "launch_backward_from_inputs", "launch_forward_from_inputs"]
