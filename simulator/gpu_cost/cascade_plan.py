"""How an attention cascade's Einsums are laid out over a GPU kernel's passes: which rank is
the streamed K/V rank, which Einsums rerun in later passes (recompute), which are skipped, which
intermediates cross passes through HBM (docs/simulator.md § GPU cost model, "Multi-pass")."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Mapping

from einsim.einsum_cascades.passes import PassReport, analyze_passes
from einsim.einsum_cascades.tiles import classify_tiles
from einsim.simulator.gpu_cost.data_mask import DataMask
from einsim.tiling import TileCounts
from einsim.simulator.binding import WINDOW_SYMBOLS, window_binding

# operations that are one lane op each; anything else (gelu, tanh, elu1, ...) is a special function
BASIC_OPS = ("mul", "add", "sub", "max", "min", "div", "exp")


def family(cascade: Any, rank: str) -> set[str]:
    """A rank and every part of its partitions (M -> M1, M0; M -> MC, MT -> M1, M0)."""
    found = {rank}
    parts = cascade.partitions
    stack = [rank]
    while stack:
        for part in parts.get(stack.pop(), ()):
            if part not in found:
                found.add(part)
                stack.append(part)
    return found


def is_attention(cascade: Any) -> bool:
    """Softmax attention as the GPU mapping understands it: an exp over both the key (M) and the
    query (P) ranks, and inputs streamed along M."""
    family_m, family_p = family(cascade, "M"), family(cascade, "P")
    if "M" not in cascade.ranks or "P" not in cascade.ranks:
        return False
    has_exp = any("exp" in e.map_ops and set(e.iteration_ranks) & family_m and set(e.iteration_ranks) & family_p
                  for e in cascade.einsums)
    streamed = any(set(ranks) & family_m and not set(ranks) & family_p for ranks in cascade.inputs.values())
    return has_exp and streamed


def is_matmul(einsum: Any) -> bool:
    """A product of two tensors summed over a contracted rank: tensor-core work."""
    return (einsum.map_ops == ("mul",) and einsum.reduce_op == "sum" and len(einsum.operand_tensors) == 2
            and bool(einsum.reduced_ranks))


def contracted(einsum: Any, sizes: Mapping[str, int]) -> float:
    return float(math.prod(sizes[r] for r in einsum.reduced_ranks)) or 1.0


def cascade_mask(cascade: Any, problem: Any) -> tuple[bool, tuple[int, int] | None]:
    """The mask the GPU visits tiles for: the problem's, and the cascade's own causal or window
    filter even when the problem does not ask for one (attention-causal, attention-window)."""
    causal, window = problem.causal, problem.window
    texts = {str(f).replace(" ", "") for f in cascade.filters}
    if "m<=p+M-P" in texts:
        causal = True
    window_binding(cascade, problem)  # a window cascade on a problem without a window: ShapeError
    return causal, window


# the cascade filters Problem's own causal / window mask stands for (cascade_mask binds them)
_PROBLEM_MASK_FILTERS = {"m<=p+M-P", "m>=p+M-P-window_leftandm<=p+M-P+window_right"}


def tile_mask(cascade: Any, problem: Any) -> Any:
    """What the GPU visits tiles for, with Problem's `tile_counts(block_m, block_n)` and
    `key_tile_counts(block_m, block_n)`: the problem with the cascade's causal or window filter
    (cascade_mask) when those are all the filters it has; otherwise the notation's exact tile
    classification (einsum_cascades.tiles) of the cascade's filters and-ed with the problem's
    mask, so sinks + window, prefix-LM or a 2-D neighbourhood visit only the tiles they keep.
    A filter that reads tensors (document ids, a block mask) is classified from the values the
    problem carries (Problem.filter_inputs: arrays or a statistical description; a DataMask);
    without them the filters' terms that read no data stand for them, and-ed with the problem's
    mask (an upper bound on the tiles visited: packed documents without ids price as causal)."""
    causal, window = cascade_mask(cascade, problem)
    masked = replace(problem, causal=causal, window=window)
    filters = tuple(cascade.filters)
    if any(f.tensors for f in filters):
        if problem.filter_inputs is None:
            return FilterMask(cascade, masked, drop_reads=True)
        sizes = _filter_sizes(cascade, problem)
        sizes.update(window_binding(cascade, problem))
        return DataMask(cascade, masked, tuple(sorted(cascade.bind(sizes).items())))
    if all(f.text.replace(" ", "") in _PROBLEM_MASK_FILTERS for f in filters):
        return masked
    return FilterMask(cascade, masked)


@dataclass(frozen=True)
class FilterMask:
    """The tiles a cascade's own filters (and the problem's mask) keep, classified exactly."""

    cascade: Any
    problem: Any
    drop_reads: bool = False  # leave out the terms that read tensors (their values are not given)

    def tile_counts(self, block_m: int, block_n: int) -> TileCounts:
        return _classified(self.cascade, self.problem, block_m, block_n, self.drop_reads).tile_counts()

    def key_tile_counts(self, block_m: int, block_n: int) -> tuple[Any, Any]:
        return _classified(self.cascade, self.problem, block_m, block_n, self.drop_reads).key_tile_counts()


@lru_cache(maxsize=256)
def _classified(cascade: Any, problem: Any, block_m: int, block_n: int, drop_reads: bool = False):
    sizes = _filter_sizes(cascade, problem)
    sizes.update(window_binding(cascade, problem))
    return classify_tiles(cascade, sizes, block_m, block_n, problem=problem, drop_reads=drop_reads)


def _filter_sizes(cascade: Any, problem: Any) -> dict[str, int]:
    """The problem's sizes of the cascade's ranks and the values of its symbols the problem sets
    (prefix-LM's `prefix`): what its filters are classified at."""
    symbols = cascade.symbols
    return {name: size for name, size in problem.rank_sizes().items() if name in cascade.ranks or name in symbols}


def bind(cascade: Any, problem: Any, block_n: int, splits: int = 1, window: tuple[int, int] | None = None,
         overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """Rank sizes for the cascade: the problem's (with `overrides`), the K/V tile (innermost
    part of M) = block_n, the outermost part of a two-level M partition (decode-splitkv's MC) =
    splits, the window symbols."""
    given = {rank: size for rank, size in problem.rank_sizes().items() if rank in cascade.ranks}
    given.update(overrides or {})
    symbols = cascade.symbols
    if window is not None and WINDOW_SYMBOLS[0] in symbols:
        given.update(zip(WINDOW_SYMBOLS, window))
    parts = dict(cascade.partitions)
    if "M" in parts:
        chain = parts["M"]
        if chain[-1] in parts:  # two levels: M -> (MC, MT), MT -> (M1, M0)
            _set_rank(cascade, given, chain[0], splits)
            inner = parts[chain[-1]][-1]
        else:
            inner = chain[-1]
        _set_rank(cascade, given, inner, block_n)
    return cascade.bind(given)


def _set_rank(cascade: Any, given: dict[str, int], rank: str, value: int) -> None:
    """Bind a rank through its symbol when it is a plain symbol (so ranks sharing it agree)."""
    size = cascade.ranks.get(rank)
    if isinstance(size, str) and size.isidentifier():
        given[size] = value
    else:
        given[rank] = value


_PLANS: dict[tuple[int, str], tuple[Any, "PassPlan"]] = {}


def pass_plan(cascade: Any, multipass: str = "recompute") -> "PassPlan":
    """The PassPlan of a cascade, analysed once per (cascade object, policy): the sweeps, the fit
    and the autotuner ask for the same few cascades thousands of times, and hashing a cascade
    (all its Einsums) costs more than the lookup saves, so the cache keys on the object (kept
    alive beside its plan, so its id cannot be reused)."""
    key = (id(cascade), multipass)
    found = _PLANS.get(key)
    if found is None:
        if len(_PLANS) > 256:
            _PLANS.clear()
        found = _PLANS[key] = (cascade, PassPlan(cascade, multipass))
    return found[1]


class PassPlan:
    """The Einsums each pass of a kernel runs (reruns included), for a cascade and a multi-pass
    policy ("recompute": later passes rerun what grows with M; "materialize": it crosses HBM)."""

    def __init__(self, cascade: Any, multipass: str = "recompute") -> None:
        self.cascade = cascade
        self.report: PassReport = analyze_passes(cascade, rank="M")
        self.family_m = family(cascade, "M")
        self.family_p = family(cascade, "P")
        self.recompute = recompute_plan(cascade, self.report, self.family_m) if (
            self.report.passes > 1 and multipass == "recompute") else {}
        self.skipped = skipped_native(cascade, self.report, self.recompute)
        self.is_attention = is_attention(cascade)
        self.inputs_by_pass = self._inputs_per_pass()

    @property
    def passes(self) -> int:
        return self.report.passes

    def runs(self) -> list[tuple[int, Any]]:
        """(pass, Einsum) of every run: each Einsum in its own pass unless skipped, plus reruns."""
        return runs(self.cascade, self.report, self.recompute, self.skipped)

    def crossing(self) -> dict[str, tuple[int, list[int]]]:
        return crossing_intermediates(self.cascade, self.report, self.recompute, self.skipped)

    def inputs_per_pass(self) -> dict[int, dict[str, str]]:
        """Pass -> {input tensor -> the first Einsum that reads it in that pass}."""
        return self.inputs_by_pass

    def _inputs_per_pass(self) -> dict[int, dict[str, str]]:
        """Operands, and the tensors the filters read (document ids, a block mask: every pass
        evaluates the mask), attributed to the pass's first Einsum."""
        per_pass: dict[int, dict[str, str]] = {}
        mask_reads = [t for f in self.cascade.filters for t in f.tensors]
        for k, einsum in self.runs():
            for tensor in tuple(einsum.operand_tensors) + tuple(mask_reads):
                if tensor in self.cascade.inputs:
                    per_pass.setdefault(k, {}).setdefault(tensor, einsum.output)
        return per_pass


def recompute_plan(cascade: Any, report: Any, family_m: set[str]) -> dict[int, list[str]]:
    """For each later pass, the Einsums rerun there: those that produce a tensor that grows with
    M, was made in an earlier pass and is read again, and, transitively, every earlier-pass
    operand of theirs that grows with M (a pass keeps nothing per key from an earlier launch).
    Earlier-pass operands that do not grow with M (row statistics) are read back from HBM."""
    producer = {e.output: e for e in cascade.einsums}
    growing = {t.tensor for t in report.live_across_passes if t.grows_with_rank and t.produced_in > 0}
    plan: dict[int, list[str]] = {}
    for einsum in cascade.einsums:
        k = report.einsum_pass.get(einsum.output, 1)
        for tensor in einsum.operand_tensors:
            if tensor in growing and report.einsum_pass.get(tensor, 1) < k:
                _add_recompute(tensor, k, producer, report, family_m, plan)
    return plan


def _add_recompute(tensor: str, k: int, producer: dict, report: Any, family_m: set[str], plan: dict) -> None:
    names = plan.setdefault(k, [])
    if tensor in names:
        return
    einsum = producer[tensor]
    for operand in einsum.operand_tensors:
        if (operand in producer and report.einsum_pass.get(operand, 1) < k
                and set(producer[operand].output_ranks) & family_m):
            _add_recompute(operand, k, producer, report, family_m, plan)
    names.append(tensor)


def runs(cascade: Any, report: Any, recompute: dict[int, list[str]], skipped: set[str]) -> list[tuple[int, Any]]:
    """(pass, Einsum) of every run: each Einsum in its own pass unless skipped, plus reruns."""
    producer = {e.output: e for e in cascade.einsums}
    found = [(report.einsum_pass.get(e.output, 1), e) for e in cascade.einsums if e.output not in skipped]
    found += [(k, producer[n]) for k, names in sorted(recompute.items()) for n in names]
    return sorted(found, key=lambda item: item[0])


def skipped_native(cascade: Any, report: Any, recompute: dict[int, list[str]]) -> set[str]:
    """Einsums a recompute mapping need not run in their own pass: nothing there reads them and
    every later pass that reads them reruns them (e.g. SLNV of the 2-pass cascade: pass 1 then
    reads no V). Found backwards, so a chain that only feeds skipped Einsums is skipped too."""
    if not recompute:
        return set()
    consumers: dict[str, list[tuple[int, Any]]] = {}
    for k, einsum in runs(cascade, report, recompute, set()):
        for operand in einsum.operand_tensors:
            consumers.setdefault(operand, []).append((k, einsum))
    rerun = {(k, n) for k, names in recompute.items() for n in names}
    skipped: set[str] = set()
    for einsum in reversed(cascade.einsums):
        name, own = einsum.output, report.einsum_pass.get(einsum.output, 1)
        if name in cascade.outputs:
            continue
        needed = False
        for k, consumer in consumers.get(name, []):
            native = (k, consumer.output) not in rerun
            if k == own and native and consumer.output not in skipped:
                needed = True  # read in its own pass
            elif k > own and (k, name) not in rerun:
                needed = True  # read back from HBM by a later pass that does not rerun it
        if not needed:
            skipped.add(name)
    return skipped


def crossing_intermediates(cascade: Any, report: Any, recompute: dict[int, list[str]],
                           skipped: set[str]) -> dict[str, tuple[int, list[int]]]:
    """Intermediate -> (pass that writes it to HBM, passes that read it back): every operand an
    Einsum run in pass k (reruns included) takes from an earlier pass without recomputing it."""
    producer = {e.output: e for e in cascade.einsums}
    crossing: dict[str, tuple[int, list[int]]] = {}
    for k, einsum in runs(cascade, report, recompute, skipped):
        for operand in einsum.operand_tensors:
            made_in = report.einsum_pass.get(operand, 1)
            if operand in producer and made_in < k and operand not in recompute.get(k, ()):
                read_in = crossing.setdefault(operand, (made_in, []))[1]
                if k not in read_in:
                    read_in.append(k)
    return {name: (made, sorted(read)) for name, (made, read) in crossing.items()}
