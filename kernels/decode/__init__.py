"""The split-KV decode kernel (`decode`), tied to the library's `decode-splitkv` cascade: a few
query rows against a long KV cache, chunks reduced in parallel, then merged.

Importing this package needs neither torch nor triton; `forward` imports them.
"""
