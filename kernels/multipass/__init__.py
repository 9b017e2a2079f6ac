"""The 2-pass and 3-pass forward kernels (`attention-2pass-fwd`, `attention-3pass-fwd`), tied to
the library's `attention-2pass` and `attention-3pass` cascades: their statistics go through HBM.

Importing this package needs neither torch nor triton; `forward` imports them.
"""
