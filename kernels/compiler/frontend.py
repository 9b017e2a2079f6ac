"""Cascade -> SoftmaxAttention: recognise, by the structure of its Einsums (never their names), a
cascade that computes softmax attention in the 1-pass running-state form, and extract what a
fused kernel needs: the roles of the ranks, the score expression and the mask.

The recognised form (fusemax.yaml, with any names and any split of the element-wise steps into
Einsums):
    out      = RNV[final] / RD[final]
    RNV[r+1] = exp(RM[r] - RM[r+1]) * RNV[r] + sum(tile) exp(S - RM[r+1]) * V
    RD[r+1]  = exp(RM[r] - RM[r+1]) * RD[r]  + sum(tile) exp(S - RM[r+1])
    RM[r+1]  = max(RM[r], max(tile) S)
with RM starting at -inf and RD, RNV at 0, where S is the score: any element-wise expression of
QK = sum(e) Q*K, extra input tensors, coordinates and sizes. Every tensor read is inlined into
one expression tree first, so the matching does not depend on how the steps are named or split.
Filters on the sums are the mask. Anything else is a ConfigError naming the Einsum and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field

from einsim.einsum_cascades.expr import Access, Binary, Call, Expr, Name, Number, Unary
from einsim.einsum_cascades.ir import AxisRead, Cascade, Einsum, Filter, resolve_access
from einsim.errors import ConfigError


# -- nodes that exist only while matching ----------------------------------------------------
@dataclass(frozen=True)
class State:
    """A read of a running state: `step` is "prev" (RM[m1]), "next" (RM[m1+1]), "final" (RM[M1])
    or "init" (RM[0])."""

    tensor: str
    step: str

    def __str__(self) -> str:
        return f"{self.tensor}<{self.step}>"


@dataclass(frozen=True)
class Reduce:
    """An inlined reduction: `op` over `ranks` of `body`, at the points that pass `filters`."""

    op: str
    ranks: frozenset
    body: object
    filters: tuple[Filter, ...]
    tensor: str  # the Einsum's output, for messages

    def __str__(self) -> str:
        return f"{self.op}({','.join(sorted(r.lower() for r in self.ranks))}) {self.body}"


@dataclass(frozen=True)
class Masked:
    """An inlined element-wise Einsum with filters: its body where they hold, 0 elsewhere."""

    body: object
    filters: tuple[Filter, ...]
    tensor: str

    def __str__(self) -> str:
        return str(self.body)


@dataclass(frozen=True)
class QKLeaf:
    """The score's one contraction of the queries with the keys, already multiplied by `scale`."""

    def __str__(self) -> str:
        return "QK"


@dataclass(frozen=True)
class ScaledQK:
    """QK times log2(e): the kernel's base-2 scores read it where QK enters linearly."""

    def __str__(self) -> str:
        return "QK*log2(e)"


# -- what the kernel is built from ---------------------------------------------------------------
@dataclass(frozen=True)
class RankRoles:
    """Which cascade rank plays which part in SDPA's layout q [B, Hq, P, E], k/v [B, Hkv, M, E|F].

    kv_head is `head` itself or the outer part of head's partition (GQA written in the
    cascade, gqa.yaml); key_steps/key_tile are the key rank's partition parts (M1, M0).
    """

    batch: str
    head: str
    kv_head: str
    query: str
    key: str
    head_dim: str
    value_dim: str
    key_steps: str
    key_tile: str


@dataclass(frozen=True)
class SoftmaxAttention:
    """A cascade recognised as softmax(S)·V: everything a kernel template needs, as plain data."""

    cascade: Cascade
    q: str
    k: str
    v: str
    output: str
    roles: RankRoles
    score: object  # expression tree over QKLeaf, extra-input Accesses, coordinates, sizes
    mask: tuple[Filter, ...]  # a point is attended iff every filter holds
    extra_inputs: tuple[str, ...]  # inputs other than Q, K, V the score or mask reads
    content_hash: str = field(default="")
    local_sum: str = ""  # the Einsum summing exp(S - RM) over a tile: its points are the pairs seen

    @property
    def name(self) -> str:
        return self.cascade.name


def content_hash(cascade: Cascade) -> str:
    """A digest of everything that defines the cascade's function (not its file or comments)."""
    parts = [cascade.name, repr(sorted(cascade.ranks.items())), repr(sorted(cascade.inputs.items())),
             repr(cascade.outputs), repr(sorted(cascade.partitions.items())),
             repr(sorted(cascade.symbols.items()))]
    parts += [str(f.text) for f in cascade.filters]
    parts += [e.text + "|" + repr(e.init) for e in cascade.einsums]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# -- generic tree helpers -------------------------------------------------------------------------
def map_children(node, fn):
    """`node` with `fn` applied to every child expression (any frozen dataclass node, so node
    kinds added to the notation later are traversed too)."""
    if not dataclasses.is_dataclass(node):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if _is_node(value):
            changes[f.name] = fn(value)
        elif isinstance(value, tuple) and value and all(_is_node(v) for v in value):
            changes[f.name] = tuple(fn(v) for v in value)
    return dataclasses.replace(node, **changes) if changes else node


def children(node):
    if not dataclasses.is_dataclass(node):
        return []
    found = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if _is_node(value):
            found.append(value)
        elif isinstance(value, tuple):
            found += [v for v in value if _is_node(v)]
    return found


def nodes(tree):
    """Every node of a tree, parents first."""
    yield tree
    for child in children(tree):
        yield from nodes(child)


def _is_node(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, (type, Filter, AxisRead)) \
        and type(value).__name__ not in ("Index",)


def canonical(tree, cascade: Cascade):
    """A hashable form of a tree without source columns: two spellings of one expression (K read
    as K[b,h,e,m] or K[b,h,e,m1,m0]) compare equal."""
    if isinstance(tree, Access):
        reads = resolve_access(cascade.space, cascade.tensors[tree.tensor], tree)
        return ("access", tree.tensor, reads)
    if isinstance(tree, (Masked, Reduce)):
        filters = frozenset(filter_key(f) for f in tree.filters)
        extra = (tree.op, tree.ranks) if isinstance(tree, Reduce) else ()
        return (type(tree).__name__, *extra, filters, canonical(tree.body, cascade))
    if not dataclasses.is_dataclass(tree):
        return tree
    items = [type(tree).__name__]
    for f in dataclasses.fields(tree):
        if f.name == "column":
            continue
        value = getattr(tree, f.name)
        if _is_node(value):
            items.append(canonical(value, cascade))
        elif isinstance(value, tuple):
            items.append(tuple(canonical(v, cascade) if _is_node(v) else v for v in value))
        else:
            items.append(value)
    return tuple(items)


def filter_key(flt: Filter) -> str:
    return " ".join(str(flt.text).split())


# -- the recogniser -----------------------------------------------------------------------------
class _Recogniser:
    def __init__(self, cascade: Cascade):
        self.cascade = cascade
        self.producers = {e.output: e for e in cascade.einsums}
        self.state_filters: dict[str, tuple] = {}  # filters of the running-state updates

    def fail(self, einsum: Einsum | None, why: str) -> ConfigError:
        if einsum is None:
            return ConfigError(f"{self.cascade.source}: cascade {self.cascade.name!r} cannot be "
                               f"compiled to a softmax-attention kernel: {why}")
        return ConfigError(f"{einsum.source}:{einsum.line}: Einsum {einsum.text!r}: cannot compile "
                           f"cascade {self.cascade.name!r} to a softmax-attention kernel: {why}")

    # inlining
    def expand(self, tree, reader: Einsum):
        if isinstance(tree, Access):
            name = tree.tensor
            if name in self.cascade.inputs:
                for index in tree.indices:
                    if index.kind == "final":
                        raise self.fail(reader, f"{tree}: an input has no final state")
                return tree
            producer = self.producers[name]
            if producer.iterative_rank is not None:
                return State(name, self.step(tree, producer, reader))
            for index in tree.indices:
                if index.kind == "const":
                    raise self.fail(reader, f"{tree} reads one fixed coordinate of {name}; a "
                                            "kernel computes every point of the score tile alike")
            body = self.expand(producer.expression, producer)
            if producer.reduce_op is not None:
                return Reduce(producer.reduce_op, frozenset(producer.reduced_ranks), body,
                              producer.filters, name)
            if producer.filters:
                return Masked(body, producer.filters, name)
            return body
        return map_children(tree, lambda child: self.expand(child, reader))

    def step(self, access: Access, producer: Einsum, reader: Einsum) -> str:
        reads = resolve_access(self.cascade.space, producer.output_ranks, access)
        step = None
        for read in reads:
            if read.rank == producer.iterative_rank:
                if read.kind == "final":
                    step = "final"
                elif read.kind == "const":
                    step = "init" if read.value == 0 else f"const {read.value}"
                else:
                    step = "next" if read.offset == 1 else "prev"
            elif read.kind == "const":
                raise self.fail(reader, f"{access} reads one fixed coordinate of {access.tensor}")
        return step

    # matching helpers
    def same(self, a, b) -> bool:
        return canonical(a, self.cascade) == canonical(b, self.cascade)

    def state_tree(self, einsum: Einsum):
        """A running state's update, inlined, without the filters of the element-wise steps
        around the tile's sums (kept in `state_filters`, with the update's own): a filter on a
        state update skips the tile for those rows (the state stays as it was), which is the same
        as excluding the tile's points, if the sums exclude them too (checked once the mask is
        known)."""
        self.state_filters.update({filter_key(f): (f, einsum) for f in einsum.filters})

        def visit(node):
            if isinstance(node, Masked):
                self.state_filters.update({filter_key(f): (f, self.producers[node.tensor])
                                           for f in node.filters})
                return visit(node.body)
            if isinstance(node, Reduce):
                return node
            return map_children(node, visit)
        return visit(self.expand(einsum.expression, einsum))

    def running_update(self, state: str):
        """The running sum `state`: (carry factor, local term) of carry * state[prev] + local."""
        einsum = self.producers[state]
        tree = self.state_tree(einsum)
        if einsum.reduce_op is not None or not (isinstance(tree, Binary) and tree.op == "+"):
            raise self.fail(einsum, f"the running sum {state} must be updated as "
                                    f"correction * {state}[previous] + local sum of the tile; got {tree}")
        for carried, local in ((tree.left, tree.right), (tree.right, tree.left)):
            if isinstance(carried, Binary) and carried.op == "*":
                for factor, other in ((carried.left, carried.right), (carried.right, carried.left)):
                    if other == State(state, "prev"):
                        return einsum, factor, local
        raise self.fail(einsum, f"the running sum {state} must be updated as correction * "
                                f"{state}[previous] + local sum of the tile; got {tree}")

    def normalised_update(self, state: str):
        """A running output kept normalised (FlashAttention-1, attention-1pass.yaml):
        RO[next] = (correction * RD[prev] * RO[prev] + local numerator) / RD[next]. By induction
        RO = RNV / RD, so it is the deferred form with RNV = RD * RO. Returns (Einsum,
        correction, local numerator, RD)."""
        einsum = self.producers[state]
        tree = self.state_tree(einsum)
        shape = (f"the running output {state} must be updated as (correction * RD[previous] * "
                 f"{state}[previous] + local numerator) / RD[next]; got {tree}")
        if einsum.reduce_op is not None or not (isinstance(tree, Binary) and tree.op == "/"
                                                and isinstance(tree.right, State)
                                                and tree.right.step == "next"):
            raise self.fail(einsum, shape)
        denominator = tree.right.tensor
        total = tree.left
        if not (isinstance(total, Binary) and total.op == "+"):
            raise self.fail(einsum, shape)
        for carried, local in ((total.left, total.right), (total.right, total.left)):
            factors = _factors(carried)
            if State(state, "prev") in factors and State(denominator, "prev") in factors \
                    and len(factors) == 3:
                (correction,) = [f for f in factors if f not in (State(state, "prev"),
                                                                 State(denominator, "prev"))]
                return einsum, correction, local, denominator
        raise self.fail(einsum, shape)

    def correction_max(self, einsum: Einsum, factor) -> str:
        """exp(RM[prev] - RM[next]) -> RM."""
        if (isinstance(factor, Call) and factor.func == "exp" and isinstance(factor.args[0], Binary)
                and factor.args[0].op == "-"):
            left, right = factor.args[0].left, factor.args[0].right
            if (isinstance(left, State) and isinstance(right, State) and left.tensor == right.tensor
                    and left.step == "prev" and right.step == "next"):
                return left.tensor
        raise self.fail(einsum, f"the correction of a running sum must be exp(RM[previous] - "
                                f"RM[next]) of a running max RM; got {factor}")

    def exponent(self, einsum: Einsum, term, running_max: str):
        """exp(S - RM[next]) (possibly filtered) -> (S, filters)."""
        filters: list[Filter] = []
        while isinstance(term, Masked):
            filters += term.filters
            term = term.body
        if (isinstance(term, Call) and term.func == "exp" and isinstance(term.args[0], Binary)
                and term.args[0].op == "-" and term.args[0].right == State(running_max, "next")):
            return term.args[0].left, filters
        raise self.fail(einsum, f"the local numerator must be exp(S - {running_max}[next]) of the "
                                f"score S and the running max; got {term}")

    def strip_masks(self, tree, mask_keys: frozenset, where: Einsum):
        """Remove Masked nodes whose filters the mask already implies; refuse others."""
        def visit(node):
            if isinstance(node, Masked):
                extra = {filter_key(f) for f in node.filters} - mask_keys
                if extra:
                    raise self.fail(self.producers[node.tensor],
                                    f"its filter {sorted(extra)} is not on the softmax sums, so the "
                                    "score would be 0 (not excluded) where it fails; put the filter "
                                    "on the whole cascade (filters:)")
                return visit(node.body)
            if isinstance(node, Reduce):
                extra = {filter_key(f) for f in node.filters} - mask_keys
                if extra:
                    raise self.fail(self.producers[node.tensor],
                                    f"its filter {sorted(extra)} is not on the softmax sums")
                return dataclasses.replace(node, body=visit(node.body), filters=())
            return map_children(node, visit)
        return visit(tree)

    # the whole form
    def recognise(self) -> SoftmaxAttention:
        cascade = self.cascade
        if len(cascade.outputs) != 1:
            raise self.fail(None, f"expected one output, got {', '.join(cascade.outputs)}")
        output = cascade.outputs[0]
        out_einsum = self.producers[output]
        tree = self.expand(out_einsum.expression, out_einsum)
        deferred = (isinstance(tree, Binary) and tree.op == "/" and isinstance(tree.left, State)
                    and isinstance(tree.right, State) and tree.left.step == tree.right.step == "final")
        normalised = isinstance(tree, State) and tree.step == "final"
        if out_einsum.reduce_op is not None or out_einsum.iterative_rank is not None \
                or not (deferred or normalised):
            plain = self._plain_form_hint()
            raise self.fail(out_einsum, "the output must be the final running numerator divided "
                                        "by the final running denominator (RNV[b,h,M1,f,p] / "
                                        "RD[b,h,M1,p], the 1-pass form of fusemax.yaml) or a "
                                        "running output kept normalised (RO[b,h,M1,f,p], "
                                        f"attention-1pass.yaml){plain}")
        if deferred:
            numerator, denominator = tree.left.tensor, tree.right.tensor
            num_einsum, num_carry, num_local = self.running_update(numerator)
            den_einsum, den_carry, den_local = self.running_update(denominator)
        else:
            numerator = tree.tensor
            num_einsum, num_carry, num_local, denominator = self.normalised_update(numerator)
            den_einsum, den_carry, den_local = self.running_update(denominator)
        running_max = self.correction_max(den_einsum, den_carry)
        if self.correction_max(num_einsum, num_carry) != running_max:
            raise self.fail(num_einsum, "the numerator and denominator are corrected by different "
                                        "running maxima")
        steps = num_einsum.iterative_rank
        if den_einsum.iterative_rank != steps:
            raise self.fail(den_einsum, f"iterates {den_einsum.iterative_rank}, the numerator {steps}")
        key = cascade.space.parent(steps)
        parts = cascade.partitions.get(key, ())
        if key is None or len(parts) != 2 or parts[0] != steps:
            raise self.fail(num_einsum, f"the running states must step along the outer part of a "
                                        f"two-part partition of the key rank (M: [M1, M0]); {steps} is not")
        tile = parts[1]
        for state, einsum, init in ((running_max, self.producers[running_max], -math.inf),
                                    (denominator, den_einsum, 0.0), (numerator, num_einsum, 0.0)):
            if einsum.iterative_rank != steps:
                raise self.fail(einsum, f"{state} must iterate {steps} like the other running states")
            if einsum.init != init:
                raise self.fail(einsum, f"{state} must start at {init} (init: {{{state}: {init}}}) for "
                                        f"softmax; it starts at {einsum.init}")

        # local sums: sum(tile) exp(S - RM[next]) and sum(tile) exp(S - RM[next]) * V
        def local_sum(einsum, local):
            if not (isinstance(local, Reduce) and local.op == "sum" and local.ranks == {tile}):
                raise self.fail(einsum, f"the local term must be a sum over {tile.lower()} (one key "
                                        f"tile); got {local}")
            return local
        den_sum = local_sum(den_einsum, den_local)
        score_d, filters_d = self.exponent(self.producers[den_sum.tensor], den_sum.body, running_max)
        num_sum = local_sum(num_einsum, num_local)
        body = num_sum.body
        if not (isinstance(body, Binary) and body.op == "*"):
            raise self.fail(self.producers[num_sum.tensor],
                            f"the local numerator must be exp(S - RM[next]) times V; got {body}")
        value_access = None
        for exp_side, v_side in ((body.left, body.right), (body.right, body.left)):
            if isinstance(v_side, Access) and v_side.tensor in cascade.inputs:
                try:
                    score_n, filters_n = self.exponent(self.producers[num_sum.tensor], exp_side,
                                                       running_max)
                except ConfigError:
                    continue
                value_access = v_side
                break
        if value_access is None:
            raise self.fail(self.producers[num_sum.tensor],
                            f"the local numerator must be exp(S - RM[next]) times an input V; got {body}")
        mask_d = {filter_key(f): f for f in (*den_sum.filters, *filters_d)}
        mask_n = {filter_key(f): f for f in (*num_sum.filters, *filters_n)}
        if set(mask_d) != set(mask_n):
            raise self.fail(self.producers[num_sum.tensor],
                            f"the numerator's filters {sorted(mask_n)} differ from the "
                            f"denominator's {sorted(mask_d)}: not one softmax")
        mask_keys = frozenset(mask_d)
        for state_key, (flt, einsum) in self.state_filters.items():
            if state_key not in mask_keys:
                raise self.fail(einsum, f"its filter {flt.text!r} skips running-state updates but "
                                        "is not on the softmax sums: the kernel's mask cannot "
                                        "express it")
        score = self.strip_masks(score_d, mask_keys, self.producers[den_sum.tensor])
        if not self.same(score, self.strip_masks(score_n, mask_keys, self.producers[num_sum.tensor])):
            raise self.fail(self.producers[num_sum.tensor],
                            f"the numerator exponentiates {score_n}, the denominator {score_d}")

        # the running max must be max(RM[prev], max(tile) S) of the same score
        max_einsum = self.producers[running_max]
        max_tree = self.state_tree(max_einsum)
        local_max = None
        if isinstance(max_tree, Call) and max_tree.func == "max" and len(max_tree.args) == 2:
            for prev, local in ((max_tree.args[0], max_tree.args[1]),
                                (max_tree.args[1], max_tree.args[0])):
                if prev == State(running_max, "prev") and isinstance(local, Reduce) \
                        and local.op == "max" and local.ranks == {tile}:
                    local_max = local
        if local_max is None:
            raise self.fail(max_einsum, f"the running max must be max({running_max}[previous], "
                                        f"max over {tile.lower()} of the score); got {max_tree}")
        max_score = self.strip_masks(local_max.body, mask_keys | {filter_key(f) for f in local_max.filters},
                                     max_einsum)
        if not self.same(max_score, score):
            raise self.fail(max_einsum, f"the running max is taken over {max_score}, but the "
                                        f"exponent uses {score}; the kernel needs one score")

        score, q_access, k_access, contraction = self.contraction(score, den_sum)
        roles = self.roles(q_access, k_access, value_access, contraction, key, steps, tile,
                           out_einsum)
        self.check_plain_reads((q_access.tensor, k_access.tensor, value_access.tensor))
        extra = []
        for node in nodes(score):
            if isinstance(node, (State, Reduce, Masked)):
                raise self.fail(self.producers[den_sum.tensor],
                                f"the score reads {node}, which is not element-wise in (query, key)")
            if isinstance(node, Access):
                if node.tensor in (q_access.tensor, k_access.tensor, value_access.tensor):
                    raise self.fail(self.producers[den_sum.tensor],
                                    f"the score reads {node} outside the contraction Q·K")
                extra.append(node.tensor)
        mask = tuple(mask_d[k] for k in sorted(mask_d))
        for flt in mask:
            for condition in flt.conditions:
                for node in nodes(condition):
                    if isinstance(node, Access):
                        extra.append(node.tensor)
        return SoftmaxAttention(
            cascade=cascade, q=q_access.tensor, k=k_access.tensor, v=value_access.tensor,
            output=output, roles=roles, score=score, mask=mask,
            extra_inputs=tuple(dict.fromkeys(extra)), content_hash=content_hash(cascade),
            local_sum=den_sum.tensor)

    def contraction(self, score, den_sum: Reduce):
        """Replace the one sum(e) Q*K in the score by QKLeaf; return the accesses."""
        found = []

        def visit(node):
            if isinstance(node, Reduce) and node.op == "sum" and isinstance(node.body, Binary) \
                    and node.body.op == "*" and len(node.ranks) == 1 \
                    and all(isinstance(s, Access) and s.tensor in self.cascade.inputs
                            for s in (node.body.left, node.body.right)):
                found.append(node)
                return QKLeaf()
            return map_children(node, visit)

        replaced = visit(score)
        einsum = self.producers[den_sum.tensor]
        if len(found) != 1:
            raise self.fail(einsum, f"the score {score} must contain exactly one contraction "
                                    f"sum(e) Q[...]*K[...] of two inputs; found {len(found)}")
        node = found[0]
        (contracted,) = tuple(node.ranks)
        left, right = node.body.left, node.body.right
        return replaced, left, right, contracted

    def check_plain_reads(self, tensors: tuple[str, ...]) -> None:
        """The kernel reads Q, K and V whole, each element at its own position (SDPA layout):
        refuse a cascade that reads one at a constant position (K[b,h,0,m1,m0], V[b,h,f,0]),
        which would otherwise compile to plain attention, a silently wrong answer."""
        for einsum in self.cascade.einsums:
            for access in einsum.operands + einsum.filter_operands:
                if access.tensor not in tensors:
                    continue
                reads = resolve_access(self.cascade.space, self.cascade.inputs[access.tensor], access)
                if any(r.kind != "coord" or r.source != r.rank or r.offset for r in reads):
                    raise self.fail(einsum, f"it reads {access}, not every element of {access.tensor} "
                                            "at its own position, which the fused kernel cannot do "
                                            "(it reads Q, K and V whole)")

    def roles(self, a: Access, b: Access, v: Access, contracted: str, key: str, steps: str,
              tile: str, out_einsum: Einsum) -> RankRoles:
        cascade, space = self.cascade, self.cascade.space
        einsum = self.producers[out_einsum.output]
        ranks = {name: cascade.inputs[name] for name in (a.tensor, b.tensor, v.tensor)}
        if key in ranks[a.tensor] and key not in ranks[b.tensor]:
            a, b = b, a
        q, k = a, b
        q_ranks, k_ranks, v_ranks = ranks[q.tensor], ranks[k.tensor], ranks[v.tensor]
        if key not in k_ranks:
            raise self.fail(einsum, f"the key rank {key} (partitioned into {steps}, {tile}) is not a "
                                    f"rank of {k.tensor}")
        if contracted not in q_ranks or contracted not in k_ranks:
            raise self.fail(einsum, f"the contraction over {contracted.lower()} must read it from "
                                    f"both {q.tensor} and {k.tensor}")
        if space.partitions.get(contracted):
            raise self.fail(einsum, f"the head dimension {contracted} must not be partitioned")

        def shared(rank, others):
            return rank in others or any(part in others for part in space.partitions.get(rank, ()))

        query = [r for r in q_ranks if r != contracted and not shared(r, k_ranks)]
        if len(query) != 1:
            raise self.fail(einsum, f"{q.tensor}{list(q_ranks)} must have exactly one rank the keys "
                                    f"do not (the query positions); found {query}")
        query = query[0]
        q_outer = [r for r in q_ranks if r not in (contracted, query)]
        k_outer = [r for r in k_ranks if r not in (contracted, key)]
        if len(q_outer) != 2 or len(k_outer) != 2:
            raise self.fail(einsum, f"{q.tensor}{list(q_ranks)} and {k.tensor}{list(k_ranks)} must "
                                    "each have a batch and a head rank besides the positions and "
                                    "the head dimension (SDPA's [B, H, N, D])")
        batch, head = q_outer
        if k_outer[0] != batch:
            raise self.fail(einsum, f"{k.tensor} must share the batch rank {batch} of {q.tensor}, "
                                    f"in the same position")
        kv_head = k_outer[1]
        head_parts = space.partitions.get(head, ())
        if kv_head != head and not (head_parts and kv_head == head_parts[0] and len(head_parts) == 2):
            raise self.fail(einsum, f"{k.tensor}'s head rank {kv_head} must be {head} or the outer "
                                    f"part of {head}'s partition (grouped-query attention, gqa.yaml)")
        value_dims = [r for r in v_ranks if r not in (batch, kv_head, key)]
        if len(value_dims) != 1 or set(v_ranks) != {batch, kv_head, key, value_dims[0]}:
            raise self.fail(einsum, f"{v.tensor}{list(v_ranks)} must have the ranks of "
                                    f"{k.tensor} with the value dimension in place of {contracted}")
        value_dim = value_dims[0]
        if space.partitions.get(query):
            # The kernel tiles queries itself; reading a partitioned query rank is fine (p1 from p)
            pass
        out_ranks = set(out_einsum.output_ranks)
        if out_ranks != {batch, head, value_dim, query}:
            raise self.fail(out_einsum, f"the output must have ranks {batch}, {head}, {query}, "
                                        f"{value_dim} (any order); it has {list(out_einsum.output_ranks)}")
        return RankRoles(batch=batch, head=head, kv_head=kv_head, query=query, key=key,
                         head_dim=contracted, value_dim=value_dim, key_steps=steps, key_tile=tile)

    def _plain_form_hint(self) -> str:
        """A hint for softmax written the plain way (a global max, exp, no running state)."""
        einsums = self.cascade.einsums
        has_state = any(e.iterative_rank for e in einsums)
        has_max = any(e.reduce_op == "max" for e in einsums)
        has_exp = any(isinstance(n, Call) and n.func == "exp" for e in einsums for n in nodes(e.expression))
        if has_state or not (has_max and has_exp):
            return ""
        return ("; this cascade has no running state (the plain 3-pass form): rewrite it to the "
                "1-pass form first (the FuseMax reassociation)")


def _factors(tree) -> list:
    """The factors of a product tree (a*b*c in any grouping)."""
    if isinstance(tree, Binary) and tree.op == "*":
        return _factors(tree.left) + _factors(tree.right)
    return [tree]


def recognise(cascade: Cascade) -> SoftmaxAttention:
    """The softmax-attention form of `cascade`, or a ConfigError naming the Einsum that breaks it."""
    return _Recogniser(cascade).recognise()


__all__ = ["QKLeaf", "RankRoles", "ScaledQK", "SoftmaxAttention", "content_hash", "recognise"]
