"""The limits of the device a kernel config must fit (shared memory, registers, SMs) and why a
program does not fit them. Plain Python: no torch, no triton. The tile-size rules every family's
resource model uses (padded head dims, pipelined shared memory) are einsim.kernel_rules, which the
GPU cost model reads too.

The attention call itself is einsim.problem.Problem.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceLimits:
    """What a launch configuration must fit on one GPU.

    shared_memory_per_block is the opt-in maximum one program may allocate (227 KiB on an H100,
    232448 bytes); shared_memory_per_sm is what all resident programs of one SM share.
    """

    name: str = "generic"
    sm_count: int = 132
    shared_memory_per_block: int = 232448
    shared_memory_per_sm: int = 233472
    registers_per_sm: int = 65536
    registers_per_thread: int = 255
    max_threads_per_sm: int = 2048
    max_threads_per_block: int = 1024
    l2_bytes: int = 50 * 1024 * 1024
    compute_capability: tuple[int, int] = (9, 0)

    @classmethod
    def h100(cls) -> "DeviceLimits":
        """NVIDIA H100 SXM5 (sm_90): 132 SMs, 228 KiB shared memory per SM, 227 KiB per block."""
        return cls(name="NVIDIA H100 SXM", sm_count=132, shared_memory_per_block=232448,
                   shared_memory_per_sm=233472, registers_per_sm=65536, max_threads_per_sm=2048,
                   l2_bytes=50 * 1024 * 1024, compute_capability=(9, 0))

    @classmethod
    def from_torch_device(cls, device=None) -> "DeviceLimits":
        """Limits of a CUDA device as torch reports them (imports torch)."""
        import torch

        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        device = torch.device(device)
        if device.type != "cuda":
            # The interpreter on CPU has no shared memory to run out of; check against an H100
            # so a config that could not run on the GPU is still rejected in CI.
            return cls.h100()
        props = torch.cuda.get_device_properties(device)
        base = cls()
        smem_block = (getattr(props, "shared_memory_per_block_optin", 0)
                      or getattr(props, "shared_memory_per_block", 0) or base.shared_memory_per_block)
        smem_sm = getattr(props, "shared_memory_per_multiprocessor", 0) or max(smem_block, base.shared_memory_per_sm)
        return cls(
            name=props.name,
            sm_count=props.multi_processor_count,
            shared_memory_per_block=int(smem_block),
            shared_memory_per_sm=int(smem_sm),
            registers_per_sm=int(getattr(props, "regs_per_multiprocessor", 0) or base.registers_per_sm),
            max_threads_per_sm=int(getattr(props, "max_threads_per_multi_processor", 0)
                                   or base.max_threads_per_sm),
            l2_bytes=int(getattr(props, "L2_cache_size", 0) or base.l2_bytes),
            compute_capability=(props.major, props.minor),
        )


def shared_memory_reasons(need: int, limits: DeviceLimits | None, what: str = "its tiles") -> list[str]:
    """Why a program that needs `need` bytes of shared memory cannot launch (empty if it can).

    One wording for every kernel family, so users and the autotuner see the same fix.
    """
    limit = (limits or DeviceLimits.h100()).shared_memory_per_block
    if need > limit:
        return [f"needs {need} bytes of shared memory per program for {what}, the device allows "
                f"{limit}: lower BLOCK_N/BLOCK_M or num_stages"]
    return []
