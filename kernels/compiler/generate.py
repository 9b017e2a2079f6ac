"""SoftmaxAttention -> Triton source: the generated helpers (score, its derivative, the mask, the
tile ranges) spliced into the kernel template, plus what the launcher must pass for them."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from einsim.einsum_cascades.expr import Number
from einsim.kernels.compiler import template
import re

from einsim.kernels.compiler.bounds import is_affine, range_function, segment_count
from einsim.kernels.compiler.codegen import Emitter, KernelArgs, condition_nodes
from einsim.kernels.compiler.derivative import derivative
from einsim.kernels.compiler.frontend import QKLeaf, SoftmaxAttention, nodes


@dataclass(frozen=True)
class GeneratedKernel:
    """A cascade's kernel source and the facts its launcher needs."""

    form: SoftmaxAttention
    source: str
    args: tuple[str, ...]  # the cascade-specific kernel arguments, in order (KernelArgs.names)
    tensors: tuple[tuple[str, int], ...]  # extra input tensors read, with their number of axes
    sizes: tuple[str, ...]  # ranks whose size is passed (sz_<rank>)
    symbols: tuple[str, ...]  # size symbols passed (sym_<name>)
    score_is_qk: bool
    grad_constant: float | None  # dS/dQK when it is one number (folded into the scale)
    digest: str  # sha256 of the source: the key of the cache file
    # How tiles are skipped: "ranges" (in-kernel bounds from an affine mask) or "blocks" (a
    # block mask built on the GPU from the element mask, for masks bounds cannot describe).
    mask_mode: str = "ranges"
    mask_reads_tensors: bool = False  # the block mask depends on input values: built per call
    mask_by_batch: bool = False  # the mask differs between batches / heads (else one is shared)
    mask_by_head: bool = False

    @property
    def name(self) -> str:
        return self.form.name


def _emit(form: SoftmaxAttention, args: KernelArgs):
    emitter = Emitter(form, args)
    score = form.score
    grad = derivative(score, QKLeaf())
    values = {
        "NAME": repr(form.name),
        "HASH": form.content_hash,
        "SCORE_TEXT": str(score),
        "GRAD_TEXT": str(grad),
        "MASK_TEXT": " and ".join(f"({f.text})" for f in form.mask) or "(none)",
        "SCORE_IS_QK": str(score == QKLeaf()),
        "GRAD_IS_CONST": str(isinstance(grad, Number)),
        # A score that can itself be -inf (a where() to -inf) needs the row-safe softmax
        # everywhere, not only in masked tiles.
        "SAFE_SOFTMAX": str(any(isinstance(n, Number) and math.isinf(n.value) for n in nodes(score))),
        "SCORE_CODE": emitter.expr(score),
        "GRAD_CODE": emitter.expr(grad) if not isinstance(grad, Number) else "qk * 0 + 1.0",
    }
    keep_lines = [f"    ok = ok & {emitter.expr(c)}  # {c}" for c in condition_nodes(form)]
    values["KEEP_CODE"] = "\n".join(keep_lines) if keep_lines else "    # no filter"
    ranges = (range_function("key_range", form, emitter, "m") + "\n\n"
              + range_function("query_range", form, emitter, "p"))
    return values, ranges, grad


def generate(form: SoftmaxAttention) -> GeneratedKernel:
    """The kernel module's source for `form` (deterministic: same cascade, same text)."""
    # First pass: learn every argument the helpers read; second pass: write every signature
    # with the complete list (the emitted code is the same, only the argument lists grow).
    probe = KernelArgs()
    _emit(form, probe)
    args = KernelArgs(dict(probe.tensors), list(probe.sizes), list(probe.symbols))
    values, ranges, grad = _emit(form, args)
    assert args.names() == probe.names(), "the second pass read new arguments"
    values["XARGS"] = args.text()
    block_mask = not is_affine(form, Emitter(form, args))
    values.update(template.visits(segment_count(form), block_mask))
    source = template.render(values, ranges)
    keep_code = values["KEEP_CODE"]
    return GeneratedKernel(
        form=form, source=source, args=tuple(args.names()), tensors=tuple(args.tensors.items()),
        sizes=tuple(args.sizes), symbols=tuple(args.symbols), score_is_qk=form.score == QKLeaf(),
        grad_constant=grad.value if isinstance(grad, Number) else None,
        digest=hashlib.sha256(source.encode()).hexdigest()[:20],
        mask_mode="blocks" if block_mask else "ranges",
        mask_reads_tensors="x_" in keep_code,
        mask_by_batch=bool(re.search(r"\bbatch\b", keep_code)),
        mask_by_head=bool(re.search(r"\b(kv_)?head\b", keep_code)))


__all__ = ["GeneratedKernel", "generate"]
