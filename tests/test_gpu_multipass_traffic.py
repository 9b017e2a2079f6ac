"""The GPU model's off-chip bytes per pass of attention-2pass/3pass equal the multi-pass kernels'
own traffic formulas (kernels/multipass/config.py via kernels.registry), written independently."""

from __future__ import annotations

import pytest

from einsim.problem import Problem
from einsim.kernels.registry import get_kernel
from einsim.simulator.simulate import simulate as simulate_gpu
from einsim.problem import Problem

# (batch, q heads, kv heads, q_len, kv_len, head dim, causal): square and not, odd lengths, GQA
SHAPES = [
    (2, 4, 4, 256, 256, 64, False),
    (1, 4, 4, 333, 333, 128, True),
    (2, 8, 2, 1000, 1300, 64, True),
    (2, 8, 4, 70, 517, 64, False),
    (1, 6, 3, 200, 129, 32, True),
]


def _kernel_pass(traffic) -> tuple[dict, dict]:
    """The kernel's pass minus what the cascade does not compute: the log-sum-exp `lse` the
    backward needs (written by the last pass; the 3-pass materialize kernel reads GM back only
    for it) and the output's name (the kernels call AV `O`)."""
    reads = dict(traffic.reads)
    writes = {("AV" if k == "O" else k): v for k, v in traffic.writes.items() if k != "lse"}
    return reads, writes


@pytest.mark.parametrize("passes", [2, 3])
@pytest.mark.parametrize("materialize", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(str(int(v)) for v in s))
@pytest.mark.parametrize("blocks", [(64, 64), (128, 32)])
def test_simulated_bytes_per_pass_equal_the_kernels(passes, materialize, shape, blocks):
    b, h, g, p, m, d, causal = shape
    block_m, block_n = blocks
    spec = get_kernel(f"attention-{passes}pass-fwd")
    config = spec.config_type(BLOCK_M=block_m, BLOCK_N=block_n, MATERIALIZE=materialize)
    problem = Problem(batch=b, q_heads=h, kv_heads=g, q_len=p, kv_len=m, head_dim=d, causal=causal)
    kernel = spec.pass_traffic(problem, config)
    est = simulate_gpu(f"attention-{passes}pass",
                       Problem(batch=b, q_heads=h, kv_heads=g, q_len=p, kv_len=m, head_dim=d, causal=causal),
                       "h100-sxm",
                       {"block_m": block_m, "block_n": block_n, "multipass": "materialize" if materialize else "recompute"})
    simulated = est.mapping["hbm_bytes_per_pass"]
    assert len(simulated) == len(kernel) == passes
    lse_only = 0
    for k, (ours, theirs) in enumerate(zip(simulated, kernel), start=1):
        reads, writes = _kernel_pass(theirs)
        if materialize and passes == 3 and k == 3:
            lse_only = reads.pop("GM")  # pass 3 of the cascade needs no GM; the kernel's lse does
        assert {n: round(v) for n, v in ours["reads"].items()} == reads, f"pass {k} reads"
        assert {n: round(v) for n, v in ours["writes"].items()} == writes, f"pass {k} writes"
    lse = b * h * p * 4
    assert est.traffic_bytes == pytest.approx(spec.hbm_bytes(problem, config) - lse - lse_only)
