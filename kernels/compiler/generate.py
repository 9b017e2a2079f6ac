"""SoftmaxAttention -> Triton source: the generated helpers (score, its derivative, the mask, the
tile ranges) spliced into the kernel template, plus what the launcher must pass for them."""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass

from einsim.einsum_cascades.expr import Access, Binary, Call, Number
from einsim.kernels.compiler import template

from einsim.kernels.compiler.bounds import is_affine, mask_terms, range_function
from einsim.kernels.compiler.codegen import Emitter, KernelArgs, QueryValue, condition_nodes
from einsim.kernels.compiler.derivative import derivative, scaled
from einsim.kernels.compiler.frontend import QKLeaf, SoftmaxAttention, nodes


LOG2_E = 1.4426950408889634
# Functions that are finite wherever their arguments are (and bounded or monotone where they are
# not needed to be): a score built from them, +, -, *, division by a number, coordinates and
# input reads is finite on rows past the end too (their reads load 0).
FINITE_FUNCTIONS = frozenset({"abs", "max", "min", "floor", "ceil", "relu", "sign", "tanh",
                              "sigmoid", "erf", "silu", "gelu", "elu1", "where"})


def score_is_finite(score) -> bool:
    """True when the score cannot be inf or NaN where QK and the inputs are finite: no
    infinite constant, no function outside FINITE_FUNCTIONS, no division by anything but a
    number (an input read as 0 past the end would divide by zero)."""
    for node in nodes(score):
        if isinstance(node, Number) and not math.isfinite(node.value):
            return False
        if isinstance(node, Call) and node.func not in FINITE_FUNCTIONS:
            return False
        if isinstance(node, Binary) and node.op == "/" and not isinstance(node.right, Number):
            return False
    return True


def index_ahead() -> bool:
    """Tile-list loops read the next list entry one iteration ahead (EINSIM_INDEX_AHEAD=0 turns
    it off, to measure both on the GPU: the generated source, hence its cache file, differs)."""
    return os.environ.get("EINSIM_INDEX_AHEAD", "1") != "0"


def forced_block_mask() -> bool:
    """EINSIM_BLOCK_MASK=1: every mask takes a block mask, tile ranges none (to measure both on
    the GPU for masks that tile ranges can walk: a sliding window's three short loops)."""
    return os.environ.get("EINSIM_BLOCK_MASK", "0") == "1"


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
    # The score's reads of extra inputs it can be differentiated in, one per distinct access, in
    # the order of the dq kernel's gradient arguments (dx_<i>, dx_<i>_s<axis>): the input's name.
    grad_accesses: tuple[str, ...] = ()
    score_derivative: str = ""  # dS/dQK as text

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
        "SCORE_FINITE": str(score_is_finite(score)),
        "INDEX_AHEAD": str(index_ahead()),
        "SCORE2_CODE": emitter.expr(scaled(score, LOG2_E)),
        "SCORE2_LSE_CODE": emitter.expr(Binary("-", scaled(score, LOG2_E), QueryValue("lse_P_"))),
        "GRAD_CODE": emitter.expr(grad) if not isinstance(grad, Number) else "qk * 0 + 1.0",
    }
    keep_lines = [f"    ok = ok & {emitter.expr(c)}  # {c}" for c in condition_nodes(form)]
    values["KEEP_CODE"] = "\n".join(keep_lines) if keep_lines else "    # no filter"
    ranges = ""
    if len(mask_terms(form)) == 1:
        ranges = (range_function("key_range", form, emitter, "m") + "\n\n"
                  + range_function("query_range", form, emitter, "p"))
    accesses = differentiable_accesses(form)
    helpers, calls, gargs = [], [], []
    for i, (access, partial) in enumerate(accesses):
        helpers.append(_extra_grad_helper(i, access, partial, emitter))
        ndim = len(form.cascade.inputs[access.tensor])
        gargs += [f"dx_{i}"] + [f"dx_{i}_s{axis}" for axis in range(ndim)]
    values["GARGS"] = "".join(", " + g for g in gargs)
    for i, _ in enumerate(accesses):
        names = ", ".join([f"dx_{i}"] + [g for g in gargs if g.startswith(f"dx_{i}_s")])
        calls.append(f"            extra_grad_{i}(ds_s, qk * scale, P_, M_, batch, head, kv_head, "
                     f"q_len, kv_len, {names}$XARGS)")
    values["DQ_EXTRA_GRADS"] = "\n".join(calls) or "            pass"
    ranges += "".join("\n\n" + h for h in helpers)
    return values, ranges, grad, tuple(a.tensor for a, _ in accesses)


def differentiable_accesses(form: SoftmaxAttention) -> list[tuple[Access, object]]:
    """(access, dS/d access) for each distinct read of an extra input the score depends on
    smoothly (its derivative is not 0)."""
    found, seen = [], set()
    for node in nodes(form.score):
        if isinstance(node, Access) and node not in seen:
            seen.add(node)
            partial = derivative(form.score, node)
            if not (isinstance(partial, Number) and partial.value == 0):
                found.append((node, partial))
    return found


def _extra_grad_helper(index: int, access: Access, partial, emitter: Emitter) -> str:
    """A helper adding dL/dS * dS/d(access) of a [queries, keys] tile into the access's fp32
    gradient buffer: summed over the axes the access does not vary along first, then one
    atomic add per element (per row, per column, or one per tile)."""
    offset, mask, rows, cols = emitter.offsets(access, f"dx_{index}_s")
    ndim = len(emitter.cascade.inputs[access.tensor])
    strides = ", ".join(f"dx_{index}_s{axis}" for axis in range(ndim))
    lines = ["@triton.jit",
             f"def extra_grad_{index}(ds, qk, P_, M_, batch, head, kv_head, q_len, kv_len, "
             f"dx_{index}, {strides}{emitter.args.text()}):",
             f'    """d loss / d {access} += dL/dS * dS/d{access.tensor} = dL/dS * ({partial})."""',
             f"    g = ds * ({emitter.expr(partial)})"]
    if rows and not cols:
        lines.append("    g = tl.sum(g, 1)[:, None]")
    elif cols and not rows:
        lines.append("    g = tl.sum(g, 0)[None, :]")
    elif not rows and not cols:
        lines.append("    g = tl.sum(tl.sum(g, 1), 0)")
    target = f"dx_{index} + {offset}"
    lines.append(f"    tl.atomic_add({target}, g, mask={mask}, sem=\"relaxed\")" if mask else
                 f"    tl.atomic_add({target}, g, sem=\"relaxed\")")
    return "\n".join(lines) + "\n"


def generate(form: SoftmaxAttention) -> GeneratedKernel:
    """The kernel module's source for `form` (deterministic: same cascade, same text)."""
    # First pass: learn every argument the helpers read; second pass: write every signature
    # with the complete list (the emitted code is the same, only the argument lists grow).
    probe = KernelArgs()
    _emit(form, probe)
    args = KernelArgs(dict(probe.tensors), list(probe.sizes), list(probe.symbols))
    values, ranges, grad, grad_accesses = _emit(form, args)
    assert args.names() == probe.names(), "the second pass read new arguments"
    values["XARGS"] = args.text()
    # Tile ranges when the mask is one affine term (3 loops, no memory: causal, windows);
    # a block mask otherwise, including several terms (sinks + window, prefix-LM): their 3 loops
    # per term each ran a tile or two behind a software-pipeline prologue, and on the H200 the
    # sinks + window forward ran at 0.90x FlexAttention that way (W2), where 2 lists walk
    # every visited tile in two loops, as Flex does.
    block_mask = (not is_affine(form, Emitter(form, args)) or len(mask_terms(form)) > 1
                  or (forced_block_mask() and bool(form.mask)))
    values.update(template.visits(block_mask))
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
        mask_by_head=bool(re.search(r"\b(kv_)?head\b", keep_code)),
        grad_accesses=grad_accesses, score_derivative=str(grad))


__all__ = ["GeneratedKernel", "generate"]
