"""The cascade compiler: any softmax-attention cascade becomes a fused forward + backward Triton
kernel. `compile(cascade)` takes the cascade's 1-pass form (the FuseMax reassociation of a plain one,
einsum_cascades.rewrite), recognises it by structure (frontend), derives
the score, its derivative and the mask (derivative, bounds), generates the kernel module from the
template (codegen, template, generate), caches it on disk by content (source_cache), registers
its forward and backward kernels (registry) and returns the callable (launch); reference.py is
its torch twin. docs/compiler.md explains each step.
"""

from __future__ import annotations

from pathlib import Path

_COMPILED: dict[str, object] = {}


def compile(cascade) -> "CompiledAttention":  # noqa: A001  (einsim.kernels.compile, by design)
    """A callable f(q, k, v, *, scale=None, **tensors) computing the cascade as fused kernels.

    `cascade`: a Cascade, a library name ("attention-causal") or a YAML path. Raises ConfigError
    (naming the Einsum) for a cascade that is not softmax attention in a form the compiler
    knows, SpecError for a file that does not parse. The result is cached per cascade content.
    """
    from einsim.einsum_cascades import Cascade, load_cascade
    from einsim.kernels.compiler.frontend import content_hash, recognise
    from einsim.kernels.compiler.generate import generate
    from einsim.kernels.compiler.launch import CompiledAttention
    from einsim.kernels.compiler.registry import register_compiled

    if isinstance(cascade, (str, Path)):
        cascade = load_cascade(cascade)
    if not isinstance(cascade, Cascade):
        from einsim.errors import ConfigError

        raise ConfigError(f"compile() takes a Cascade, a library name or a YAML path; got "
                          f"{type(cascade).__name__}")
    key = content_hash(cascade)
    if key not in _COMPILED:
        compiled = CompiledAttention(generate(recognise(one_pass(cascade))))
        register_compiled(compiled)
        _COMPILED[key] = compiled
    return _COMPILED[key]


def one_pass(cascade):
    """The cascade in the 1-pass running-state form the kernels implement: itself when it has
    running states, else the FuseMax reassociation of its plain softmax (einsum_cascades.rewrite,
    the IR rewrite the pass analysis confirms: one pass). A plain cascade that is no softmax is
    returned as it is, for recognise() to say why."""
    from einsim.einsum_cascades.rewrite import reassociate
    from einsim.errors import SpecError

    if any(einsum.iterative_rank for einsum in cascade.einsums):
        return cascade
    try:
        return reassociate(cascade)
    except SpecError:
        return cascade


def __getattr__(name):
    if name == "CompiledAttention":
        from einsim.kernels.compiler.launch import CompiledAttention

        return CompiledAttention
    raise AttributeError(f"module 'einsim.kernels.compiler' has no attribute {name!r}")


__all__ = ["compile"]
