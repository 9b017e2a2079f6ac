"""Serving-shaped decode (`decode-paged`): the `decode-splitkv` cascade over a KV cache whose
sequences have their own lengths (`cache_seqlens`), optionally paged (a block table into a pool
of fixed-size pages, the vLLM/FlashInfer layout), with GQA and several query tokens per sequence
(speculative decoding), split so that every program gets the same number of key tiles however
unequal the lengths are (stream-K, as Lean Attention partitions decode).

Work units are key tiles of one (sequence, KV head, row tile) segment, laid end to end over the
batch. The split pass runs a fixed grid of P programs (the device's SMs times the programs one
SM holds: static, so a CUDA graph can capture it); each reads `cache_seqlens` on the GPU,
derives the same schedule (total units T, chunk = ceil(T / P') with P' <= P programs of at least
MIN_TILES units each) and walks its contiguous chunk, which may cross segment boundaries: for
each piece it writes a partial (running max, sum, numerator) to slot `segment + program` (pieces
in chunk order make that index strictly increase, so slots never collide and number at most
segments + P). The merge pass, one program per segment, finds the programs that covered it from
the same schedule, rescales their partials to the common max and writes O and the log-sum-exp.
No host synchronisation, no dependence of the grid on the lengths. docs/kernels.md § Serving
decode.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

from einsim.kernels.decode.config import MIN_TILES_PER_SPLIT
from einsim.kernels.decode.softmax import finish, fold_partial, fold_tile
from einsim.kernels.launch import TritonLaunch
from einsim.kernel_rules import padded_head_dim
from einsim.kernels import runtime

LOG2_E = 1.4426950408889634


@triton.jit
def _schedule(Seqlens, batch, kv_segments, capacity, num_programs,
              BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr, MIN_TILES: tl.constexpr):
    """Per-sequence lengths (clamped to the cache's capacity) and tiles, the running unit count
    at the end of each sequence, the total, the programs that get work and their chunk."""
    offs_b = tl.arange(0, BLOCK_B)
    lens = tl.load(Seqlens + offs_b, mask=offs_b < batch, other=0).to(tl.int32)
    lens = tl.minimum(tl.maximum(lens, 0), capacity)
    tiles = (lens + BLOCK_N - 1) // BLOCK_N
    units = tiles * kv_segments
    ends = tl.cumsum(units, 0)
    total = tl.sum(units, 0)
    programs = tl.minimum(num_programs, tl.maximum((total + MIN_TILES - 1) // MIN_TILES, 1))
    chunk = tl.maximum((total + programs - 1) // programs, 1)
    return offs_b, lens, tiles, ends, total, programs, chunk


@triton.jit
def _pick(offs_b, b, values):
    """values[b] of a [BLOCK_B] vector, as a scalar."""
    return tl.sum(tl.where(offs_b == b, values, 0), 0)


@triton.jit
def _tile_pages(BlockTable, b, tile, len_b, stride_tb, stride_tp, page_size,
                PAGED: tl.constexpr, PAGE_SHIFT: tl.constexpr, WIDE: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """The block-table entries tile `tile` of sequence b needs, in the shape `_tile_rows` reads:
    for power-of-two pages (2**PAGE_SHIFT keys) a [BLOCK_N / page] vector when a tile spans whole
    pages, one entry when it sits inside one page; otherwise one entry per key. Unpaged: b."""
    if PAGED:
        if PAGE_SHIFT >= 0:
            if BLOCK_N >= (1 << PAGE_SHIFT):
                index = ((tile * BLOCK_N) >> PAGE_SHIFT) + tl.arange(0, BLOCK_N >> PAGE_SHIFT)
                pages = tl.load(BlockTable + b * stride_tb + index * stride_tp,
                                mask=(index << PAGE_SHIFT) < len_b, other=0)
            else:
                pages = tl.load(BlockTable + b * stride_tb + ((tile * BLOCK_N) >> PAGE_SHIFT) * stride_tp)
        else:
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            pages = tl.load(BlockTable + b * stride_tb + (cols // page_size) * stride_tp,
                            mask=cols < len_b, other=0)
    else:
        pages = b
    if WIDE:
        pages = pages.to(tl.int64)
    return pages


@triton.jit
def _tile_rows(pages, tile, page_size, stride_page, stride_row, PAGED: tl.constexpr,
               PAGE_SHIFT: tl.constexpr, WIDE: tl.constexpr, ALIGNED: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """Element offsets of the BLOCK_N key rows of tile `tile` in one cache (its page and row
    strides). Whole pages per tile: each page's rows are consecutive, as in a dense cache, so
    the addresses cost about what they cost there. ALIGNED: every row starts at a multiple of 16
    elements (checked on the host), which lets the loads vectorise."""
    if PAGED:
        if PAGE_SHIFT >= 0:
            if BLOCK_N >= (1 << PAGE_SHIFT):
                in_page = tl.arange(0, 1 << PAGE_SHIFT)
                if WIDE:
                    in_page = in_page.to(tl.int64)
                rows = tl.reshape(pages[:, None] * stride_page + in_page[None, :] * stride_row,
                                  [BLOCK_N])
            else:
                in_page = ((tile * BLOCK_N) & ((1 << PAGE_SHIFT) - 1)) + tl.arange(0, BLOCK_N)
                if WIDE:
                    in_page = in_page.to(tl.int64)
                rows = pages * stride_page + in_page * stride_row
        else:
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            in_page = cols % page_size
            if WIDE:
                in_page = in_page.to(tl.int64)
            rows = pages * stride_page + in_page * stride_row
    else:
        cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        if WIDE:
            cols = cols.to(tl.int64)
        rows = pages * stride_page + cols * stride_row
    if ALIGNED:
        rows = tl.multiple_of(rows, 16)
    return rows


@triton.jit
def _paged_tiles(m_i, l_i, acc, q, K, V, BlockTable, b, kv_head, lo, hi, len_b, position, row_ok,
                 stride_kp, stride_kr, stride_kh, stride_kd, stride_vp, stride_vr, stride_vh,
                 stride_vd, stride_tb, stride_tp, page_size, head_dim, v_head_dim, scale_log2,
                 MASKED: tl.constexpr, PAGED: tl.constexpr, PAGE_SHIFT: tl.constexpr,
                 WIDE: tl.constexpr, ALIGNED: tl.constexpr,
                 IS_CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr, EVEN_D: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Key tiles [lo, hi) of one segment through the online softmax. Unmasked tiles (every key
    of the tile visible to every row) load and compute without predicates. The block table is
    read one tile ahead, so the K/V loads of a tile do not wait on its table lookup."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    pages = _tile_pages(BlockTable, b, lo, len_b, stride_tb, stride_tp, page_size, PAGED,
                        PAGE_SHIFT, WIDE, BLOCK_N)
    for tile in tl.range(lo, hi):
        cols = tile * BLOCK_N + offs_n
        col_ok = cols < len_b
        k_rows = _tile_rows(pages, tile, page_size, stride_kp, stride_kr, PAGED, PAGE_SHIFT, WIDE,
                            ALIGNED, BLOCK_N)
        v_rows = _tile_rows(pages, tile, page_size, stride_vp, stride_vr, PAGED, PAGE_SHIFT, WIDE,
                            ALIGNED, BLOCK_N)
        k_ptrs = K + kv_head * stride_kh + k_rows[None, :] + offs_d[:, None] * stride_kd
        v_ptrs = V + kv_head * stride_vh + v_rows[:, None] + offs_dv[None, :] * stride_vd
        pages = _tile_pages(BlockTable, b, tile + 1, len_b, stride_tb, stride_tp, page_size, PAGED,
                            PAGE_SHIFT, WIDE, BLOCK_N)
        if MASKED:
            kt = tl.load(k_ptrs, mask=col_ok[None, :] & (offs_d[:, None] < head_dim), other=0.0)
            v = tl.load(v_ptrs, mask=col_ok[:, None] & (offs_dv[None, :] < v_head_dim), other=0.0)
        elif EVEN_D:
            kt = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            kt = tl.load(k_ptrs, mask=offs_d[:, None] < head_dim, other=0.0)
            v = tl.load(v_ptrs, mask=offs_dv[None, :] < v_head_dim, other=0.0)
        if DOT_FP32:
            qk = tl.dot(q, kt.to(tl.float32))
        else:
            qk = tl.dot(q, kt)
        qk = qk * scale_log2
        if MASKED:
            visible = col_ok[None, :] & row_ok[:, None]
            if IS_CAUSAL:
                visible = visible & (cols[None, :] <= position[:, None])
            qk = tl.where(visible, qk, float("-inf"))
        m_i, l_i, acc = fold_tile(m_i, l_i, acc, qk, v, DOT_FP32)
    return m_i, l_i, acc


@triton.jit
def _paged_split(
    Q, K, V, BlockTable, Seqlens, Partials, n_partials,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kp, stride_kr, stride_kh, stride_kd,
    stride_vp, stride_vr, stride_vh, stride_vd,
    stride_tb, stride_tp,
    batch, kv_heads, group, q_len, rows_total, row_tiles, head_dim, v_head_dim,
    page_size, capacity, num_programs, scale_log2,
    PAGED: tl.constexpr, PAGE_SHIFT: tl.constexpr, WIDE: tl.constexpr, ALIGNED: tl.constexpr,
    IS_CAUSAL: tl.constexpr, DOT_FP32: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, BLOCK_B: tl.constexpr, MIN_TILES: tl.constexpr,
):
    pid = tl.program_id(0)
    kv_segments = kv_heads * row_tiles
    offs_b, lens, tiles, ends, total, programs, chunk = _schedule(
        Seqlens, batch, kv_segments, capacity, num_programs, BLOCK_N, BLOCK_B, MIN_TILES)
    start = pid * chunk
    end = tl.minimum(start + chunk, total)
    end = tl.where(pid < programs, end, start)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    while start < end:
        # The segment holding unit `start`: its sequence, KV head, row tile, first tile.
        b = tl.sum((ends <= start).to(tl.int32), 0)
        len_b = _pick(offs_b, b, lens)
        tiles_b = _pick(offs_b, b, tiles)
        first_unit = _pick(offs_b, b, ends) - tiles_b * kv_segments
        segment = (start - first_unit) // tiles_b
        first_tile = start - first_unit - segment * tiles_b
        stop = tl.minimum(end, first_unit + (segment + 1) * tiles_b)
        last_tile = first_tile + (stop - start)
        kv_head = segment // row_tiles
        rows = (segment - kv_head * row_tiles) * BLOCK_M + offs_m
        row_ok = rows < rows_total
        qg = rows // q_len
        qi = rows - qg * q_len
        position = len_b - q_len + qi  # key position of each query row (bottom-right aligned)
        q = tl.load(Q + b.to(tl.int64) * stride_qb + (kv_head * group + qg)[:, None] * stride_qh
                    + qi[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                    mask=row_ok[:, None] & (offs_d[None, :] < head_dim), other=0.0)
        if DOT_FP32:
            q = q.to(tl.float32)
        # Tiles below `full` are visible to every row: no masks there.
        visible_to_all = len_b - q_len + 1 if IS_CAUSAL else len_b
        full = tl.minimum(tl.maximum(visible_to_all, 0) // BLOCK_N, last_tile)
        full = tl.maximum(full, first_tile)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
        m_i, l_i, acc = _paged_tiles(
            m_i, l_i, acc, q, K, V, BlockTable, b, kv_head, first_tile, full, len_b, position,
            row_ok, stride_kp, stride_kr, stride_kh, stride_kd, stride_vp, stride_vr, stride_vh,
            stride_vd, stride_tb, stride_tp, page_size, head_dim, v_head_dim, scale_log2,
            False, PAGED, PAGE_SHIFT, WIDE, ALIGNED, IS_CAUSAL, DOT_FP32, EVEN_D, BLOCK_N, BLOCK_D,
            BLOCK_DV)
        m_i, l_i, acc = _paged_tiles(
            m_i, l_i, acc, q, K, V, BlockTable, b, kv_head, full, last_tile, len_b, position,
            row_ok, stride_kp, stride_kr, stride_kh, stride_kd, stride_vp, stride_vr, stride_vh,
            stride_vd, stride_tb, stride_tp, page_size, head_dim, v_head_dim, scale_log2,
            True, PAGED, PAGE_SHIFT, WIDE, ALIGNED, IS_CAUSAL, DOT_FP32, EVEN_D, BLOCK_N, BLOCK_D,
            BLOCK_DV)
        slot = (b * kv_segments + segment + pid).to(tl.int64)
        # One fp32 scratch buffer: n_partials maxima, n_partials sums, then the numerators.
        tl.store(Partials + slot * BLOCK_M + offs_m, m_i)
        tl.store(Partials + n_partials + slot * BLOCK_M + offs_m, l_i)
        tl.store(Partials + 2 * n_partials + (slot * BLOCK_M + offs_m)[:, None] * BLOCK_DV
                 + offs_dv[None, :], acc)
        start = stop


@triton.jit
def _paged_merge(
    Seqlens, Partials, n_partials, Out, Lse,
    stride_ob, stride_oh, stride_om, stride_od,
    batch, kv_heads, group, q_len, rows_total, row_tiles, v_head_dim, capacity, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_B: tl.constexpr,
    MIN_TILES: tl.constexpr,
):
    s = tl.program_id(0)
    kv_segments = kv_heads * row_tiles
    b = s // kv_segments
    segment = s - b * kv_segments
    offs_b, lens, tiles, ends, total, programs, chunk = _schedule(
        Seqlens, batch, kv_segments, capacity, num_programs, BLOCK_N, BLOCK_B, MIN_TILES)
    tiles_b = _pick(offs_b, b, tiles)
    first = _pick(offs_b, b, ends) - tiles_b * kv_segments + segment * tiles_b
    p_first = first // chunk
    pieces = tl.where(tiles_b > 0, (first + tiles_b - 1) // chunk - p_first + 1, 0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for i in range(0, pieces):
        slot = (s + p_first + i).to(tl.int64)
        pm = tl.load(Partials + slot * BLOCK_M + offs_m)
        pl = tl.load(Partials + n_partials + slot * BLOCK_M + offs_m)
        pacc = tl.load(Partials + 2 * n_partials + (slot * BLOCK_M + offs_m)[:, None] * BLOCK_DV
                       + offs_dv[None, :])
        m, l_sum, acc = fold_partial(m, l_sum, acc, pm, pl, pacc)
    out, lse = finish(m, l_sum, acc)
    kv_head = segment // row_tiles
    rows = (segment - kv_head * row_tiles) * BLOCK_M + offs_m
    row_ok = rows < rows_total
    qg = rows // q_len
    qi = rows - qg * q_len
    head = kv_head * group + qg
    o_ptrs = (Out + b.to(tl.int64) * stride_ob + head[:, None] * stride_oh + qi[:, None] * stride_om
              + offs_dv[None, :] * stride_od)
    tl.store(o_ptrs, out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dv[None, :] < v_head_dim))
    tl.store(Lse + (b.to(tl.int64) * kv_heads * group + head) * q_len + qi, lse, mask=row_ok)


def run(plan, q, k_cache, v_cache, cache_seqlens, block_table):
    """Split pass then merge of a PagedDecodePlan on checked inputs. Returns (out, lse)."""
    out = runtime.empty_output(plan.out_shape, q.device, q.dtype)
    lse = runtime.empty_output(plan.out_shape[:3], q.device)
    partials = runtime.scratch((plan.slots * plan.block_m * (2 + plan.block_dv),), q.device)
    table = block_table if block_table is not None else cache_seqlens  # never read unpaged
    split_args = (q, k_cache, v_cache, table, cache_seqlens, partials)
    merge_args = (cache_seqlens, partials, out, lse)
    if plan.launches is None:
        plan.launches = _make_launches(plan, q, k_cache, v_cache, table, out, split_args,
                                       merge_args)
    plan.launches[0](*split_args)
    plan.launches[1](*merge_args)
    return out, lse


def _last_offset(tensor) -> int:
    """The largest element offset from the tensor's base (any strides)."""
    return sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride()))


def cache_strides(cache, paged: bool) -> tuple[int, int, int, int]:
    """(page or batch, row, head, dim) strides of a paged [pages, page_size, Hkv, D] cache or a
    contiguous [B, Hkv, N, D] one."""
    s = cache.stride()
    return (s[0], s[1], s[2], s[3]) if paged else (s[0], s[2], s[1], s[3])


def _make_launches(plan, q, k_cache, v_cache, table, out, split_args, merge_args):
    problem, config = plan.problem, plan.config
    scale = 1.0 / math.sqrt(problem.head_dim) if plan.scale is None else float(plan.scale)
    table_strides = (table.stride(0), table.stride(1)) if plan.paged else (0, 0)
    sizes = (problem.batch, problem.kv_heads, problem.group_size, problem.q_len, plan.rows,
             plan.row_tiles)
    block_b = max(16, triton.next_power_of_2(problem.batch))
    k_strides = cache_strides(k_cache, plan.paged)
    v_strides = cache_strides(v_cache, plan.paged)
    aligned = (all(s % 16 == 0 for s in k_strides[:3] + v_strides[:3])
               and k_strides[3] == 1 and v_strides[3] == 1
               and k_cache.data_ptr() % 16 == 0 and v_cache.data_ptr() % 16 == 0)
    block_d = padded_head_dim(problem.head_dim)
    even_d = problem.head_dim == block_d and problem.v_head_dim == plan.block_dv
    page_size = plan.page_size
    power_of_two = page_size & (page_size - 1) == 0
    page_shift = (page_size.bit_length() - 1
                  if plan.paged and power_of_two and not config.PER_KEY_PAGES else -1)
    # 32-bit key offsets unless some element of a cache lies 2^31 or more elements in
    wide = max(_last_offset(k_cache), _last_offset(v_cache)) >= 2**31
    n_partials = plan.slots * plan.block_m
    split = TritonLaunch(
        _paged_split, (plan.programs,), *split_args, n_partials, *q.stride(),
        *k_strides, *v_strides, *table_strides,
        *sizes, problem.head_dim, problem.v_head_dim, plan.page_size, plan.capacity,
        plan.programs, scale * LOG2_E,
        PAGED=plan.paged, PAGE_SHIFT=page_shift, WIDE=wide, ALIGNED=aligned, IS_CAUSAL=problem.causal, DOT_FP32=plan.dot_fp32,
        EVEN_D=even_d, BLOCK_M=plan.block_m, BLOCK_N=config.BLOCK_N, BLOCK_D=block_d,
        BLOCK_DV=plan.block_dv, BLOCK_B=block_b, MIN_TILES=MIN_TILES_PER_SPLIT,
        num_warps=config.num_warps, num_stages=config.num_stages)
    seqlens, partials, out_, lse = merge_args
    merge = TritonLaunch(
        _paged_merge, (problem.batch * problem.kv_heads * plan.row_tiles,), seqlens, partials,
        n_partials, out_, lse,
        *out.stride(), *sizes, problem.v_head_dim, plan.capacity, plan.programs,
        BLOCK_M=plan.block_m, BLOCK_N=config.BLOCK_N, BLOCK_DV=plan.block_dv, BLOCK_B=block_b,
        MIN_TILES=MIN_TILES_PER_SPLIT, num_warps=4 if plan.block_dv >= 128 else 2)
    return split, merge
