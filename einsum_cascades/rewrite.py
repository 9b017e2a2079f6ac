"""The FuseMax reassociation as a cascade -> cascade rewrite: plain softmax attention (a score,
its max over the key rank, exp(score - max), their sum, the division, the product with V)
becomes the partitioned running-state 1-pass cascade of fusemax.yaml, with the score Einsums,
extra inputs and filters carried over. The softmax is found by the structure of the Einsum graph
(which Einsum takes a max over which rank of which tensor, which one exponentiates the
difference, ...), never by tensor names.

    reassociate(load_cascade("attention-3pass"))   # -> a Cascade that needs 1 pass over M
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from einsim.einsum_cascades.expr import Access, Binary, Call, Index, transform
from einsim.einsum_cascades.ir import Cascade, Einsum, resolve_access
from einsim.einsum_cascades.loader import parse_cascade
from einsim.einsum_cascades.space import index_var
from einsim.errors import SpecError

NEW_TENSORS = ("LM", "RM", "SLN", "SLD", "PRM", "SPD", "RD", "SLNV", "SPNV", "RNV")


@dataclass(frozen=True)
class Softmax:
    """Where the softmax sits in a plain cascade: G = max(k) X, N = exp(X - G), D = sum(k) N, and
    either A = N / D with O = sum(k) A * V, or W = sum(k) N * V with O = W / D."""

    key: str  # the rank the softmax normalises over (M)
    score: str  # X, the tensor whose max is taken
    maximum: Einsum
    numerator: Einsum
    denominator: Einsum
    weights: Einsum  # A = N / D, or W = sum(k) N * V
    output: Einsum
    value: Access  # the V read of the product
    divide_last: bool  # O = W / D (the division after the sum over k)


def find_softmax(cascade: Cascade) -> Softmax:
    """The softmax of a plain cascade; a named SpecError when there is none."""
    candidates = [e for e in cascade.einsums if e.reduce_op == "max" and len(e.reduced_ranks) == 1
                  and isinstance(e.expression, Access)]
    if not candidates:
        raise SpecError(
            f"{cascade.source}: {cascade.name}: no Einsum takes the max of one tensor over one rank "
            "(GM[p] = max(m) QK[m,p]): not a plain softmax attention cascade, nothing to reassociate"
        )
    failures = []
    for maximum in candidates:
        try:
            return _match(cascade, maximum)
        except SpecError as error:
            failures.append(error)
    # the candidate that matched the most of the pattern says best what is missing
    raise max(failures, key=lambda error: getattr(error, "stage", 0))


def _where(einsum: Einsum) -> str:
    return f"{einsum.source}:{einsum.line}: Einsum {einsum.text!r}"


def _plain_read(cascade: Cascade, access: Access, einsum: Einsum) -> None:
    """The softmax's reads must be at the point's own coordinates (no constants, no states)."""
    for read in resolve_access(cascade.space, cascade.tensors[access.tensor], access):
        if read.kind not in ("coord", "part") or read.offset:
            raise SpecError(f"{_where(einsum)}: {access} is not read at the point's own coordinates: cannot reassociate")


def _match(cascade: Cascade, maximum: Einsum) -> Softmax:
    key = maximum.reduced_ranks[0]
    score = maximum.expression.tensor
    if cascade.space.parent(key) is not None or key in cascade.partitions:
        raise SpecError(
            f"{_where(maximum)}: the max runs over {key}, which is partitioned already: the cascade is not in the "
            "plain form (reassociate the plain cascade, before tiling it)"
        )
    einsums = {e.output: e for e in cascade.einsums}
    readers = {name: [e for e in cascade.einsums if name in e.operand_tensors] for name in einsums}

    stage = [0]

    def only(found: list[Einsum], what: str, after: Einsum) -> Einsum:
        if len(found) != 1:
            got = "none" if not found else ", ".join(repr(e.text) for e in found)
            error = SpecError(f"{_where(after)}: expected one Einsum that {what}, found {got}: not a softmax")
            error.stage = stage[0]
            raise error
        stage[0] += 1
        return found[0]

    def is_access(node, tensor: str) -> bool:
        return isinstance(node, Access) and node.tensor == tensor

    numerator = only([e for e in readers[maximum.output] if e.reduce_op is None and isinstance(e.expression, Call)
                      and e.expression.func == "exp" and isinstance(e.expression.args[0], Binary)
                      and e.expression.args[0].op == "-" and is_access(e.expression.args[0].left, score)
                      and is_access(e.expression.args[0].right, maximum.output)],
                     f"computes exp({score} - {maximum.output})", maximum)
    n = numerator.output
    denominator = only([e for e in readers[n] if e.reduce_op == "sum" and e.reduced_ranks == (key,)
                        and is_access(e.expression, n)], f"sums {n} over {index_var(key)}", numerator)
    d = denominator.output

    def product(e: Einsum, factor: str) -> Access | None:
        """The other factor of `factor * other` summed over the key rank."""
        expr = e.expression
        if e.reduce_op != "sum" or e.reduced_ranks != (key,) or not isinstance(expr, Binary) or expr.op != "*":
            return None
        if is_access(expr.left, factor) and isinstance(expr.right, Access):
            return expr.right
        if is_access(expr.right, factor) and isinstance(expr.left, Access):
            return expr.left
        return None

    divisions = [e for e in readers[n] if e.reduce_op is None and isinstance(e.expression, Binary)
                 and e.expression.op == "/" and is_access(e.expression.left, n) and is_access(e.expression.right, d)]
    weighted = [e for e in readers[n] if product(e, n) is not None]
    if divisions:  # A = N / D, O = sum(k) A * V
        weights = only(divisions, f"divides {n} by {d}", denominator)
        output = only([e for e in readers[weights.output] if product(e, weights.output) is not None],
                      f"sums {weights.output} times V over {index_var(key)}", weights)
        value, divide_last = product(output, weights.output), False
    elif weighted:  # W = sum(k) N * V, O = W / D
        weights = only(weighted, f"sums {n} times V over {index_var(key)}", numerator)
        output = only([e for e in readers[weights.output] if e.reduce_op is None and isinstance(e.expression, Binary)
                       and e.expression.op == "/" and is_access(e.expression.left, weights.output)
                       and is_access(e.expression.right, d)], f"divides {weights.output} by {d}", weights)
        value, divide_last = product(weights, n), True
    else:
        error = SpecError(
            f"{_where(denominator)}: nothing divides {n} by {d} (A = {n} / {d}) or sums {n} times V over "
            f"{index_var(key)}: not a softmax attention"
        )
        error.stage = stage[0]
        raise error
    found = Softmax(key, score, maximum, numerator, denominator, weights, output, value, divide_last)
    try:
        _check_the_rest(cascade, found)
    except SpecError as error:
        error.stage = 10
        raise
    return found


def _check_the_rest(cascade: Cascade, found: Softmax) -> None:
    softmax = (found.maximum, found.numerator, found.denominator, found.weights, found.output)
    names = {e.output for e in softmax}
    for einsum in softmax:
        own = [f for f in einsum.filters if f not in cascade.filters]
        if own:
            raise SpecError(
                f"{_where(einsum)}: its own filter 'where {own[0].text}' is part of the softmax; write it in filters: "
                "(the cascade-wide filters carry over to the 1-pass form)"
            )
        for access in einsum.operands:
            _plain_read(cascade, access, einsum)
    if cascade.outputs != (found.output.output,):
        raise SpecError(f"{cascade.source}: {cascade.name}: the reassociated cascade returns {found.output.output} "
                        f"only; outputs are {', '.join(cascade.outputs)}")
    for einsum in cascade.einsums:
        if einsum.output in names:
            continue
        reads = set(einsum.operand_tensors) & (names - {found.score})
        if reads:
            raise SpecError(
                f"{_where(einsum)}: it reads {', '.join(sorted(reads))}, part of the softmax, and is neither the "
                "score nor the softmax: the rewrite cannot place it"
            )
        if found.key in einsum.reduced_ranks:
            raise SpecError(
                f"{_where(einsum)}: it reduces over {index_var(found.key)} before the softmax, so the score needs "
                "whole rows and cannot be computed tile by tile"
            )
    if found.value.tensor in names:
        raise SpecError(f"{_where(found.output)}: {found.value} is part of the softmax, not the values")


def reassociate(cascade: Cascade, tile_symbol: str = "block_m", tile: int = 64) -> Cascade:
    """The 1-pass running-state cascade computing what the plain `cascade` computes; its key
    tile M0 is the size symbol `tile_symbol` (default `tile`). The pass analysis gives it 1 pass."""
    text = reassociated_yaml(cascade, tile_symbol, tile)
    return parse_cascade(text, source=f"{cascade.source} (reassociated)")


class _Tiled:
    """How the rewrite spells accesses once the key rank `key` is cut into tiles (outer, inner)."""

    def __init__(self, key: str):
        self.key, self.outer, self.inner = key, f"{key}1", f"{key}0"

    def spelled(self, ranks) -> list[str]:
        out = []
        for rank in ranks:
            out += [self.outer, self.inner] if rank == self.key else [rank]
        return out

    def access(self, tensor: str, ranks, state: str = "") -> str:
        """tensor read at the point's own coordinates; `state` "next"/"final" for a running
        state at [m1+1] / [M1]."""
        indices = []
        for rank in ranks:
            if rank == self.outer and state == "next":
                indices.append(f"{index_var(self.outer)}+1")
            elif rank == self.outer and state == "final":
                indices.append(self.outer)
            else:
                indices.append(index_var(rank))
        return f"{tensor}[{','.join(indices)}]"

    def with_tile(self, ranks, like) -> list[str]:
        """`ranks` with the tile index inserted after the leading ranks that precede the key in
        the score `like` (RM[b,h,m1,p] for GM[b,h,p] and QK[b,h,m,p])."""
        before = like[:like.index(self.key)]
        position = 0
        while position < len(ranks) and ranks[position] in before:
            position += 1
        return list(ranks[:position]) + [self.outer] + list(ranks[position:])


def _running_softmax(found: Softmax, tensors: Mapping[str, tuple[str, ...]], new: Mapping[str, str],
                     t: _Tiled) -> list[str]:
    """The 1-pass softmax's Einsums: tile max, running max, numerators and sums corrected by
    exp(RM - RM'), running numerator times V, one division at the end."""
    a = t.access
    score_ranks = tensors[found.score]
    x = t.spelled(score_ranks)
    stat = t.with_tile(tensors[found.maximum.output], score_ranks)  # LM, RM, SLD, PRM, SPD, RD
    numer = t.spelled(tensors[found.numerator.output])  # SLN
    out_ranks = tensors[found.output.output]
    acc = t.with_tile(out_ranks, score_ranks)  # SLNV, SPNV, RNV
    value = _expand(found.value, t.key, t.outer, t.inner)
    X, O = found.score, found.output.output
    LM, RM, SLN, SLD, PRM, SPD, RD, SLNV, SPNV, RNV = (new[n] for n in NEW_TENSORS)
    return [
        f"{a(LM, stat)} = max({index_var(t.inner)}) {a(X, x)}",
        f"{a(RM, stat, 'next')} = max({a(RM, stat)}, {a(LM, stat)})",
        f"{a(SLN, numer)} = exp({a(X, x)} - {a(RM, stat, 'next')})",
        f"{a(SLD, stat)} = {a(SLN, numer)}",
        f"{a(PRM, stat)} = exp({a(RM, stat)} - {a(RM, stat, 'next')})",
        f"{a(SPD, stat)} = {a(PRM, stat)} * {a(RD, stat)}",
        f"{a(RD, stat, 'next')} = {a(SPD, stat)} + {a(SLD, stat)}",
        f"{a(SLNV, acc)} = {a(SLN, numer)} * {value}",
        f"{a(SPNV, acc)} = {a(PRM, stat)} * {a(RNV, acc)}",
        f"{a(RNV, acc, 'next')} = {a(SPNV, acc)} + {a(SLNV, acc)}",
        f"{a(O, out_ranks)} = {a(RNV, acc, 'final')} / {a(RD, stat, 'final')}",
    ]


def reassociated_yaml(cascade: Cascade, tile_symbol: str = "block_m", tile: int = 64) -> str:
    """The reassociated cascade as YAML text (what `reassociate` parses)."""
    found = find_softmax(cascade)
    t = _Tiled(found.key)
    key, outer, inner = t.key, t.outer, t.inner
    for rank in (outer, inner):
        if rank in cascade.ranks:
            raise SpecError(f"{cascade.source}: {cascade.name}: rank {rank} exists; the rewrite needs it for the tiles of {key}")
    symbols = dict(cascade.symbols)
    if tile_symbol not in symbols and tile_symbol not in {str(v) for v in cascade.ranks.values()}:
        symbols[tile_symbol] = tile
    taken = set(cascade.tensors)
    new = {name: _fresh(name, taken) for name in NEW_TENSORS}
    softmax = {found.maximum.output, found.numerator.output, found.denominator.output, found.weights.output,
               found.output.output}
    lines = [_rewritten(cascade, einsum, key, outer, inner) for einsum in cascade.einsums
             if einsum.output not in softmax]
    lines += _running_softmax(found, cascade.tensors, new, t)
    RM, RD, RNV = new["RM"], new["RD"], new["RNV"]
    ranks = {**{r: v for r, v in cascade.ranks.items() if not _derived_by_partition(cascade, r)}, inner: tile_symbol}
    partitions = {**{p: list(parts) for p, parts in cascade.partitions.items()}, key: [outer, inner]}
    return "\n".join([
        f"name: {cascade.name}-1pass",
        "description: >",
        f"  {cascade.name} reassociated (FuseMax): the max, exponentials and sums over {key} run tile by",
        f"  tile of {inner} keys with a running max {RM}, denominator {RD} and numerator {RNV}; one division per output.",
        f"ranks: {_flow(ranks)}",
        f"symbols: {_flow(symbols)}" if symbols else "",
        f"partitions: {_flow({p: '[' + ', '.join(parts) + ']' for p, parts in partitions.items()})}",
        f"inputs: {_flow({n: '[' + ', '.join(r) + ']' for n, r in cascade.inputs.items()})}",
        f"init: {{{RM}: -inf, {RD}: 0, {RNV}: 0}}",
        ("filters:\n" + "\n".join(f"  - {_quoted(f.text)}" for f in cascade.filters)) if cascade.filters else "",
        "einsums:",
        *[f"  - {_quoted(line)}" for line in lines],
        f"outputs: [{found.output.output}]",
        "",
    ]).replace("\n\n", "\n")


def _derived_by_partition(cascade: Cascade, rank: str) -> bool:
    """A part whose size the loader derived (M1 = ceil(M/M0)): it is derived again on reload."""
    parent = cascade.space.parent(rank)
    if parent is None:
        return False
    others = [p for p in cascade.partitions[parent] if p != rank]
    return cascade.ranks[rank] == (f"ceil({parent}/{'/'.join(others)})" if len(others) == 1
                                   else f"ceil({parent}/({'*'.join(others)}))")


def _fresh(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate = f"{name}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


def _flow(mapping) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _expand(access: Access, key: str, outer: str, inner: str) -> str:
    """An access with the key rank's index m spelled as its tiles m1, m0."""
    indices = []
    for index in access.indices:
        if index.kind == "var" and index.name == index_var(key):
            if index.offset:
                raise SpecError(f"{access}: an offset on {index.name} cannot be spelled over its tiles")
            indices += [Index("var", index_var(outer)), Index("var", index_var(inner))]
        else:
            indices.append(index)
    return str(Access(access.tensor, tuple(indices)))


def _rewritten(cascade: Cascade, einsum: Einsum, key: str, outer: str, inner: str) -> str:
    """A score Einsum (or anything else outside the softmax) over the tiles of the key rank:
    indices m become m1, m0; the coordinate m keeps meaning the absolute position."""
    out = _expand(Access(einsum.output, einsum.output_indices), key, outer, inner)
    expression = transform(einsum.expression,
                           lambda node: Access(node.tensor, _split(node.indices, key, outer, inner))
                           if isinstance(node, Access) else None)
    prefix = ""
    if einsum.reduce_op in ("max", "min"):
        prefix = f"{einsum.reduce_op}({','.join(index_var(r) for r in einsum.reduced_ranks)}) "
    own = [f.text for f in einsum.filters if f not in cascade.filters]
    return f"{out} = {prefix}{expression}" + (f" where {own[0]}" if own else "")


def _split(indices, key: str, outer: str, inner: str) -> tuple[Index, ...]:
    found = []
    for index in indices:
        if index.kind == "var" and index.name == index_var(key) and not index.offset:
            found += [Index("var", index_var(outer)), Index("var", index_var(inner))]
        else:
            found.append(index)
    return tuple(found)
