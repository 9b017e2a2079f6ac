"""The cascade notation: the library parses, counts follow the documented convention, and bad
input is named by file, line and column (syntax) or by the Einsum (meaning)."""

import pytest

from einsim.einsum_cascades import library_names, load_cascade, parse_cascade
from einsim.errors import SpecError

HEADER = """name: t
ranks: {E: 4, M: 8, P: 3}
inputs: {Q: [E, P], K: [E, M]}
einsums:
"""


def cascade_with(*lines: str, outputs: str = "QK"):
    body = "".join(f"  - {line}\n" for line in lines)
    return parse_cascade(HEADER + body + f"outputs: [{outputs}]\n", source="t.yaml")


@pytest.mark.parametrize("name", library_names())
def test_every_library_cascade_loads_and_binds(name):
    import numpy as np

    cascade = load_cascade(name)
    sizes = cascade.bind({"kv_len": 100, "q_len": 30, "seq_len": 50, "tokens": 64})
    assert cascade.name == name
    # inputs a filter reads (document ids, a block mask): all ones
    tensors = {t: np.ones(cascade.tensor_shape(t, sizes)) for e in cascade.einsums for t in e.read_tensors
               if t in cascade.inputs}
    for einsum in cascade.einsums:
        assert einsum.iteration_points(sizes, tensors) > 0


def test_matmul_counts_one_add_per_point():
    cascade = load_cascade("attention-3pass")
    sizes = cascade.bind({"M": 100, "P": 30, "E": 16, "F": 8})
    assert cascade.einsum("QK").operation_counts(sizes) == {"mul": 16 * 100 * 30, "add": 16 * 100 * 30}
    assert cascade.einsum("GM").operation_counts(sizes) == {"max": 100 * 30}
    assert cascade.einsum("SN").operation_counts(sizes) == {"sub": 3000, "exp": 3000}


def test_partition_tail_tile_is_not_counted():
    cascade = load_cascade("fusemax")
    sizes = cascade.bind({"kv_len": 100, "q_len": 3, "block_m": 64, "head_dim": 2})
    assert sizes["M1"] == 2
    assert cascade.einsum("QK").iteration_points(sizes) == 2 * 100 * 3
    assert cascade.einsum("RM").iteration_points(sizes) == 2 * 3
    assert cascade.tensor_elements("RM", sizes) == 3 * 3  # M1 + 1 states


def test_causal_filter_counts_the_visible_triangle():
    cascade = parse_cascade(HEADER.replace("einsums:", 'filters: ["m <= p + M - P"]\neinsums:')
                            + "  - QK[m,p] = Q[e,p] * K[e,m]\noutputs: [QK]\n")
    sizes = cascade.bind({})
    visible = sum(min(8, p + 8 - 3 + 1) for p in range(3))
    assert cascade.einsum("QK").iteration_points(sizes) == 4 * visible


def test_counting_large_causal_uses_intervals():
    cascade = parse_cascade(HEADER.replace("einsums:", 'filters: ["m <= p"]\neinsums:')
                            + "  - QK[m,p] = Q[e,p] * K[e,m]\noutputs: [QK]\n")
    n = 100_000
    assert cascade.einsum("QK").iteration_points({"M": n, "P": n}) == 4 * n * (n + 1) // 2


def test_syntax_error_names_file_line_column_and_what_was_expected():
    with pytest.raises(SpecError, match=r"t\.yaml:5:32: expected a tensor access"):
        cascade_with("QK[m,p] = Q[e,p] * K[e,m] +")


@pytest.mark.parametrize(
    "line, outputs, message",
    [
        ("QK[m,p] = Q[e,p] * Z[e,m]", "QK", "tensor Z is not an input and no Einsum produces it"),
        ("QK[m,p] = Q[e,p] * K[m,e]", "QK", "position 1 of K is rank E"),
        ("QK[m,p] = Q[e,p] * K[e,x]", "QK", "index x names no rank"),
        ("QK[m,p] = max(m) Q[e,p] * K[e,m]", "QK", "must list exactly the indices absent"),
    ],
)
def test_semantic_errors_name_the_einsum(line, outputs, message):
    with pytest.raises(SpecError, match=r"t\.yaml:5: Einsum 'QK\[m,p\]") as error:
        cascade_with(line, outputs=outputs)
    assert message in str(error.value)


def test_output_never_produced_is_named():
    with pytest.raises(SpecError, match="ZZ is never produced"):
        cascade_with("QK[m,p] = Q[e,p] * K[e,m]", outputs="ZZ")


def test_cycle_is_named():
    with pytest.raises(SpecError, match="cycle"):
        cascade_with("QK[m,p] = Q[e,p] * K[e,m] + B[m,p]", "B[m,p] = QK[m,p]")


@pytest.mark.parametrize("name", ["attention-causal", "attention-window", "linear-attention", "decode-splitkv"])
@pytest.mark.parametrize("enumerate_limit", [1 << 22, 1])  # 1: force the interval counting
def test_counts_match_the_executors_own_mask(name, enumerate_limit, monkeypatch):
    import numpy as np

    from einsim.einsum_cascades import counting as space_module

    monkeypatch.setattr(space_module, "_BRUTE_FORCE_POINTS", enumerate_limit)
    cascade = load_cascade(name)
    sizes = cascade.bind({"kv_len": 11, "q_len": 7, "seq_len": 9, "block_m": 3, "block": 4, "num_splits": 3,
                          "window_left": 2, "window_right": 1, "head_dim": 2, "v_head_dim": 3})
    for einsum in cascade.einsums:
        axes = {}
        for axis, rank in enumerate(einsum.iteration_ranks):
            shape = [1] * len(einsum.iteration_ranks)
            shape[axis] = sizes[rank]
            axes[rank] = np.arange(sizes[rank]).reshape(shape)
        coords, mask = cascade.space.coordinates(axes, sizes)
        for flt in einsum.filters:
            mask = mask & flt.evaluate(coords, sizes)
        expected = int(np.broadcast_to(mask, [sizes[r] for r in einsum.iteration_ranks]).sum())
        cascade.space._counts.clear()
        assert einsum.iteration_points(sizes) == expected, einsum.text
