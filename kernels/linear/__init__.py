"""Linear attention (Lightning / RetNet style), a kernel family of its own, tied to the library's
linear-attention cascades: chunk.py (the chunked forward and backward, their launchers and the
autograd Function), decode.py (one token against the state), naive.py (the recurrence in plain
torch, obviously correct), config.py (configs, search spaces, resource models; registers the
kernels). Importing this package needs neither torch nor triton.
"""
