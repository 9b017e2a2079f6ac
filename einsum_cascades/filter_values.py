"""The values of the tensors a cascade's filters read, for a call's bound sizes: the arrays the
user gave (einsim.filter_inputs.FilterInputs), and for the others what a statistical description
expands to, chosen by each tensor's ranks (docs/notation.md § Filters that read data):

- `documents` fills a tensor over one position rank — the query rank P (the query's document,
  at its key position p + M - P: bottom-right alignment) or the key rank M — with the ids of
  packed documents, one draw per batch row (B), the same for every other leading rank (H);
- `blocks` fills a tensor over one part of the query rank's partition and one of the key rank's
  (BLOCKS[b,h,p1,m1]) with a block mask of the given density, one draw per leading position.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from einsim.errors import ShapeError
from einsim.filter_inputs import BlockDensity, Documents, FilterInputs, diagonal_blocks


def filter_tensors(cascade) -> dict[str, tuple[str, ...]]:
    """Every input tensor a filter of the cascade reads (cascade-wide or one Einsum's own),
    with its declared ranks, in first-read order."""
    found: dict[str, tuple[str, ...]] = {}
    for flt in tuple(cascade.filters) + tuple(f for e in cascade.einsums for f in e.filters):
        for name, ranks in flt.tensor_ranks.items():
            found.setdefault(name, ranks)
    return found


def filter_values(cascade, sizes: Mapping[str, int], inputs: FilterInputs | None, *, causal: bool = False,
                  query: str = "P", key: str = "M") -> dict[str, np.ndarray] | None:
    """{tensor: values} for every tensor the cascade's filters read, at bound `sizes`; None when
    they read none. `causal`: the call's own mask is causal (a block description then chooses
    among the causal key blocks). ShapeError naming the tensor when neither an array nor a
    description gives it; shapes are checked where the values are used (einsum_cascades.tiles)."""
    needed = filter_tensors(cascade)
    if not needed:
        return None
    if inputs is None:
        raise ShapeError(f"{cascade.name}: the filters read {', '.join(needed)}; give their values (an .npz of "
                         "arrays, or a description such as 'documents:1024' or 'blocks:0.25')")
    values: dict[str, np.ndarray] = {}
    for name, ranks in needed.items():
        if name in inputs.names:
            values[name] = inputs.values(name)
            continue
        for description in inputs.descriptions:
            filled = _fill(description, cascade, ranks, sizes, causal, query, key)
            if filled is not None:
                values[name] = filled
                break
        else:
            given = inputs.describe() or "nothing"
            raise ShapeError(f"{cascade.name}: nothing gives the values of {name} [{', '.join(ranks)}] (given: {given}); "
                             "documents fill a tensor over [B, P] or [B, M], blocks one over a part of P and a part "
                             f"of M ([B, H, P1, M1]); pass {name} as an array otherwise")
    return values


def _fill(description, cascade, ranks: tuple[str, ...], sizes: Mapping[str, int], causal: bool,
          query: str, key: str) -> np.ndarray | None:
    space = cascade.space
    query_family, key_family = space.family(query), space.family(key)
    positional = [r for r in ranks if r in query_family or r in key_family]
    leading = [r for r in ranks if r not in positional]
    q_len, kv_len = sizes[query], sizes[key]
    if isinstance(description, Documents):
        if len(positional) != 1 or positional[0] not in (query, key) or ranks[-1] != positional[0]:
            return None
        batch_axis = [i for i, r in enumerate(leading) if space.root(r) == "B"]
        batch = sizes[leading[batch_axis[0]]] if batch_axis else 1
        ids = description.ids(batch, max(q_len, kv_len))
        before = max(0, q_len - kv_len)  # query rows whose key position is before key 0
        row = ids[:, max(0, kv_len - q_len):max(0, kv_len - q_len) + q_len] if positional[0] == query \
            else ids[:, before:before + kv_len]
        return _spread(row, leading, batch_axis, sizes)
    if isinstance(description, BlockDensity):
        if len(positional) != 2 or ranks[-2:] != tuple(positional):
            return None
        q_part, k_part = positional
        q_block, k_block = _block(space, q_part, query, sizes), _block(space, k_part, key, sizes)
        if q_block is None or k_block is None:
            return None
        rows, columns = sizes[q_part], sizes[k_part]
        diagonal = diagonal_blocks(rows, q_block, q_len, kv_len, k_block)
        visible = np.minimum(diagonal + 1, columns) if causal else np.full(rows, columns)
        copies = int(np.prod([sizes[r] for r in leading])) if leading else 1
        mask = description.mask(rows, columns, copies, diagonal, visible)
        return mask.reshape([sizes[r] for r in leading] + [rows, columns])
    return None


def _block(space, part: str, root: str, sizes: Mapping[str, int]) -> int | None:
    """Positions of `root` per step of its partition's part `part` (p1 -> P0), or None when
    `part` is not its outermost part."""
    parts = space.partitions.get(root, ())
    if not parts or parts[0] != part:
        return None
    block = 1
    for inner in parts[1:]:
        block *= sizes[inner]
    return block


def _spread(rows: np.ndarray, leading: list[str], batch_axis: list[int], sizes: Mapping[str, int]) -> np.ndarray:
    """[batch, positions] ids laid out over the tensor's leading ranks (batch along B, the same
    ids along the others)."""
    shape = [sizes[r] for r in leading] + [rows.shape[-1]]
    view = [1] * len(leading) + [rows.shape[-1]]
    if batch_axis:
        view[batch_axis[0]] = rows.shape[0]
    else:
        rows = rows[:1]
    return np.broadcast_to(rows.reshape(view), shape).copy()
