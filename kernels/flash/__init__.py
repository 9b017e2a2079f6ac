"""The fused FlashAttention-style kernels: the 1-pass forward (`attention-fwd`, the fusemax
cascade) and its backward (`attention-bwd`). config.py is torch-free; forward.py and
backward.py hold the Triton kernels, their launchers and the autograd Function."""
