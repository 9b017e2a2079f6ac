"""The one GPU cost model: every GPU time einsim states (the simulator's estimate, the
autotuner's ranking, the roofline, layer and model estimates) comes from `kernel_cost` and the
launch engine under it (docs/simulator.md § GPU cost model)."""

from einsim.simulator.gpu_cost.mapping import GpuMapping, gpu_mapping
from einsim.simulator.gpu_cost.model import KernelCost, kernel_cost
from einsim.simulator.gpu_cost.roofs import GpuRoofs, gpu_roofs
from einsim.simulator.gpu_cost.styles import STYLE_NAMES, style

__all__ = ["GpuMapping", "GpuRoofs", "KernelCost", "STYLE_NAMES", "gpu_mapping", "gpu_roofs", "kernel_cost", "style"]
