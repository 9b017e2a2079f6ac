"""Triton attention kernels, one folder per algorithm family, each tied to its cascade.

Importing this package needs neither torch nor triton: the registry, config spaces and resource
models are plain Python so that the simulator and autotuner can reason about kernels on machines
without a GPU stack. Launchers import torch and triton when first called.
"""
