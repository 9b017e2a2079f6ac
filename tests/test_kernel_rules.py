"""einsim.kernel_rules: the kernels' resource figures that the GPU cost model prices with too,
pinned to what the compiled kernels measured (the figures quoted in the module)."""

from einsim.kernel_rules import (LINEAR_MIN_SEGMENT_CHUNKS, attention_shared_memory, linear_default_segment,
                                 linear_walk_shared_memory, padded_head_dim)


def test_head_dims_pad_to_a_power_of_two_of_at_least_16():
    assert [padded_head_dim(d) for d in (1, 7, 16, 64, 80, 96, 128, 129)] == [16, 16, 16, 64, 128, 128, 128, 256]


def test_shared_memory_matches_the_compiled_kernels():
    assert attention_shared_memory(128, 128, 3, 128, 128, 2) == 230400  # H100 metadata, docs/performance.md v1
    assert attention_shared_memory(128, 128, 3, 80, 80, 2) == 230400  # D=80 is tiled as 128
    assert linear_walk_shared_memory(64, 64, 2, 128, 128, 2) == 98304  # sm_90, benchmarks/compile_linear.py
    assert linear_walk_shared_memory(64, 64, 2, 128, 32, 2) == linear_walk_shared_memory(64, 32, 2, 128, 32, 2)


def test_the_linear_walk_is_cut_into_segments_only_when_the_grid_is_short():
    assert linear_default_segment(8, 32, 65536, 64, 64, 128) == 0  # 512 programs: one walk each
    segment = linear_default_segment(1, 4, 65536, 64, 64, 128)  # 8 programs: cut to reach 256
    assert segment % 64 == 0 and segment // 64 >= LINEAR_MIN_SEGMENT_CHUNKS
    assert 1 * 4 * 2 * -(-65536 // segment) >= 256
    assert linear_default_segment(1, 1, 128, 64, 64, 64) == 0  # too short to cut
