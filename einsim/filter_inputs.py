"""The values of the input tensors a cascade's filters read (packed documents' ids, a block-sparse
mask), as part of the attention call: arrays, or a statistical description that expands to
representative arrays deterministically when the real ones are not at hand.

`Problem.filter_inputs` carries a `FilterInputs`, so both simulators, the autotuner's ranking and
the roofline price the tiles such filters empty (docs/simulator.md § Filters that read data).
Which description fills which of a cascade's tensors is decided from the tensors' ranks by
`einsim.einsum_cascades.filter_values`; here are only the values. Bottom layer: numpy only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from einsim.errors import ShapeError

LENGTH_LAWS = ("exponential", "fixed")


@dataclass(frozen=True)
class Documents:
    """Packed documents: each batch row is a run of documents of `mean_length` tokens on average,
    their lengths drawn from `lengths` ("exponential": geometric lengths of that mean, the long
    tail of real corpora; "fixed": all equal, the last one cut by the row's end), seeded."""

    mean_length: int
    lengths: str = "exponential"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.mean_length, bool) or not isinstance(self.mean_length, int) or self.mean_length < 1:
            raise ShapeError(f"documents: mean_length must be a positive integer, got {self.mean_length!r}")
        if self.lengths not in LENGTH_LAWS:
            raise ShapeError(f"documents: lengths must be one of {', '.join(LENGTH_LAWS)}, got {self.lengths!r}")
        _check_seed("documents", self.seed)

    def ids(self, batch: int, positions: int) -> np.ndarray:
        """[batch, positions] int32 document ids, non-decreasing along each row from 0."""
        rng = np.random.default_rng(self.seed)
        out = np.empty((batch, positions), dtype=np.int32)
        for row in range(batch):
            if self.lengths == "fixed":
                out[row] = np.arange(positions) // self.mean_length
                continue
            # a document ends after each token with probability 1 / mean: geometric lengths
            ends = rng.random(positions) < 1.0 / self.mean_length
            out[row] = np.concatenate(([0], np.cumsum(ends[:-1]))) if positions else ends
        return out

    def describe(self) -> str:
        return f"documents(mean {self.mean_length}, {self.lengths}, seed {self.seed})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "documents", "mean_length": self.mean_length, "lengths": self.lengths, "seed": self.seed}


@dataclass(frozen=True)
class BlockDensity:
    """A block-sparse mask: each query block keeps `density` of the key blocks it may see (the
    causal ones when the call is causal), chosen at random (seeded) as a top-k selection keeps a
    fixed number per row (MInference, FlexPrefill), always with its diagonal block when
    `diagonal` (the local block every published pattern keeps)."""

    density: float
    seed: int = 0
    diagonal: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)) or not 0 < self.density <= 1:
            raise ShapeError(f"blocks: density must be a number in (0, 1], got {self.density!r}")
        object.__setattr__(self, "density", float(self.density))
        _check_seed("blocks", self.seed)
        if not isinstance(self.diagonal, bool):
            raise ShapeError(f"blocks: diagonal must be true or false, got {self.diagonal!r}")

    def mask(self, rows: int, columns: int, copies: int, diagonal: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """[copies, rows, columns] int8 (1: computed). `diagonal[r]` is row r's own key block,
        `visible[r]` how many key blocks (from the first) row r may see."""
        rng = np.random.default_rng(self.seed)
        out = np.zeros((copies, rows, columns), dtype=np.int8)
        for copy in range(copies):
            for row in range(rows):
                seen = int(visible[row])
                if seen <= 0:
                    continue
                keep = max(1, round(self.density * seen))
                chosen = []
                if self.diagonal and 0 <= diagonal[row] < seen:
                    chosen.append(int(diagonal[row]))
                others = np.setdiff1d(np.arange(seen), chosen)
                chosen += rng.choice(others, size=min(len(others), keep - len(chosen)), replace=False).tolist()
                out[copy, row, chosen] = 1
        return out

    def describe(self) -> str:
        return f"blocks(density {self.density:g}, seed {self.seed}{'' if self.diagonal else ', no diagonal'})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "blocks", "density": self.density, "seed": self.seed, "diagonal": self.diagonal}


Description = Documents | BlockDensity


def _check_seed(kind: str, seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ShapeError(f"{kind}: seed must be an integer >= 0, got {seed!r}")


class FilterInputs:
    """Named arrays (a filter tensor's values) and statistical descriptions (for the tensors not
    given as arrays). Immutable and hashable by content, so a Problem holding it stays a cache
    key; read back from JSON, arrays are known by digest only (`values` then says so)."""

    __slots__ = ("_arrays", "_digests", "_shapes", "descriptions", "digest")

    def __init__(self, arrays: Mapping[str, Any] | None = None, descriptions: tuple = ()):
        self._arrays: dict[str, np.ndarray] = {}
        self._digests: dict[str, str] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for name, value in sorted((arrays or {}).items()):
            if not isinstance(name, str) or not name.isidentifier():
                raise ShapeError(f"filter inputs: tensor names must be identifiers, got {name!r}")
            array = np.array(value, copy=True)
            if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise ShapeError(f"filter inputs: {name} must hold numbers, got dtype {array.dtype}")
            if array.size and not np.all(np.isfinite(array.astype(np.float64))):
                raise ShapeError(f"filter inputs: {name} holds NaN or infinite values")
            array.setflags(write=False)
            self._arrays[name] = array
            self._shapes[name] = array.shape
            self._digests[name] = hashlib.sha1(str(array.dtype).encode() + str(array.shape).encode()
                                               + np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
        for description in descriptions:
            if not isinstance(description, (Documents, BlockDensity)):
                raise ShapeError(f"filter inputs: a description must be Documents or BlockDensity, got {description!r}")
        self.descriptions = tuple(descriptions)
        self.digest = self._content_digest()

    def _content_digest(self) -> str:
        text = repr(sorted(self._digests.items())) + repr([d.to_dict() for d in self.descriptions])
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def of(cls, value: Any) -> "FilterInputs | None":
        """From what a user passes: None, a FilterInputs, a mapping of name -> array, a
        description (Documents, BlockDensity, or its text: `documents:1024`), a list of them,
        or a path to an .npz file."""
        if value is None or isinstance(value, FilterInputs):
            return value
        if isinstance(value, (Documents, BlockDensity)):
            return cls(descriptions=(value,))
        if isinstance(value, Path) or (isinstance(value, str) and value.endswith(".npz")):
            return load_npz(value)
        if isinstance(value, str):
            return cls(descriptions=(parse_description(value),))
        if isinstance(value, Mapping):
            return cls(arrays=value)
        if isinstance(value, (list, tuple)):
            found = [cls.of(item) for item in value]
            return merge(found)
        raise ShapeError(f"filter inputs: expected arrays by name, an .npz path or a description such as "
                         f"'documents:1024' or 'blocks:0.25', got {type(value).__name__}")

    # -- reading -------------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """The tensors given as arrays."""
        return tuple(self._shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def values(self, name: str) -> np.ndarray:
        """The array given for `name` (read-only)."""
        if name not in self._arrays:
            raise ShapeError(f"filter inputs: the values of {name} (digest {self._digests[name]}) were not "
                             "kept in this record (JSON keeps digests only); pass the arrays again")
        return self._arrays[name]

    def describe(self) -> str:
        parts = [f"{name}{list(shape)}" for name, shape in self._shapes.items()]
        parts += [d.describe() for d in self.descriptions]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each array's shape and digest, each description's parameters."""
        values: dict[str, Any] = {}
        if self._shapes:
            values["arrays"] = {n: {"shape": list(s), "digest": self._digests[n]} for n, s in self._shapes.items()}
        if self.descriptions:
            values["descriptions"] = [d.to_dict() for d in self.descriptions]
        return values

    @classmethod
    def from_dict(cls, values: Any, source: str = "filter_inputs") -> "FilterInputs":
        """What to_dict wrote: descriptions in full, arrays by digest (values() then asks for them)."""
        if not isinstance(values, Mapping) or set(values) - {"arrays", "descriptions"}:
            raise ShapeError(f"{source}: expected {{arrays: ..., descriptions: [...]}}, got {values!r}")
        descriptions = tuple(description_from_dict(d, f"{source}.descriptions[{i}]")
                             for i, d in enumerate(values.get("descriptions", [])))
        made = cls(descriptions=descriptions)
        for name, entry in (values.get("arrays") or {}).items():
            if not isinstance(entry, Mapping) or "shape" not in entry or "digest" not in entry:
                raise ShapeError(f"{source}.arrays.{name}: expected {{shape: [...], digest: ...}}, got {entry!r}")
            made._shapes[name] = tuple(int(n) for n in entry["shape"])
            made._digests[name] = str(entry["digest"])
        made.digest = made._content_digest()
        return made

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterInputs) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"FilterInputs({self.describe()})"


def merge(parts) -> FilterInputs:
    """One FilterInputs of several (a name given twice is an error)."""
    arrays: dict[str, np.ndarray] = {}
    descriptions: list = []
    for part in parts:
        for name in part.names:
            if name in arrays:
                raise ShapeError(f"filter inputs: {name} is given twice")
            arrays[name] = part.values(name)
        descriptions += part.descriptions
    return FilterInputs(arrays, tuple(descriptions))


def load_npz(path: str | Path) -> FilterInputs:
    """The arrays of an .npz file, by their names in it."""
    try:
        with np.load(path, allow_pickle=False) as found:
            return FilterInputs({name: found[name] for name in found.files})
    except (OSError, ValueError) as error:
        raise ShapeError(f"{path}: cannot read it as an .npz file of the filters' tensors ({error})") from None


_KINDS = {"documents": (Documents, "mean_length", {"mean_length": int, "mean": int, "lengths": str, "seed": int}),
          "blocks": (BlockDensity, "density", {"density": float, "seed": int, "diagonal": bool})}
DESCRIPTION_HELP = ("documents:MEAN[,lengths=exponential|fixed][,seed=S] (packed documents of MEAN tokens on average) "
                    "or blocks:DENSITY[,seed=S][,diagonal=false] (a block mask keeping DENSITY of the key blocks)")


def parse_description(text: str) -> Description:
    """`documents:1024`, `documents:mean=1024,lengths=fixed,seed=3`, `blocks:0.25`,
    `blocks:density=0.1,diagonal=false` (ShapeError naming the grammar otherwise)."""
    kind, _, rest = str(text).strip().partition(":")
    if kind not in _KINDS or not rest:
        raise ShapeError(f"filter inputs {text!r}: expected an .npz file or {DESCRIPTION_HELP}")
    cls, first, fields = _KINDS[kind]
    values: dict[str, Any] = {}
    for position, item in enumerate(rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            key, value = (first, key) if position == 0 else (key, "")
        key = key.strip()
        if key not in fields or not value.strip():
            raise ShapeError(f"filter inputs {text!r}: {item!r} is not one of {', '.join(fields)}=VALUE; {DESCRIPTION_HELP}")
        values["mean_length" if key == "mean" else key] = _convert(fields[key], value.strip(), text)
    return cls(**values)


def _convert(kind: type, value: str, text: str) -> Any:
    try:
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        if kind is int:
            number = float(value.replace("k", "e3").replace("K", "e3"))
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        return kind(value)
    except ValueError:
        raise ShapeError(f"filter inputs {text!r}: {value!r} is not a {kind.__name__}; {DESCRIPTION_HELP}") from None


def description_from_dict(values: Any, source: str) -> Description:
    if not isinstance(values, Mapping) or values.get("kind") not in _KINDS:
        raise ShapeError(f"{source}: expected {{kind: documents|blocks, ...}}, got {values!r}")
    cls = _KINDS[values["kind"]][0]
    try:
        return cls(**{k: v for k, v in values.items() if k != "kind"})
    except TypeError as error:
        raise ShapeError(f"{source}: {error}") from None


def diagonal_blocks(q_blocks: int, q_block: int, q_len: int, kv_len: int, k_block: int) -> np.ndarray:
    """Each query block's own key block under bottom-right alignment: the key block holding the
    key position of its last query row (p + kv_len - q_len), -1 when that lies before key 0."""
    last = np.minimum((np.arange(q_blocks) + 1) * q_block, q_len) - 1 + kv_len - q_len
    return np.where(last >= 0, np.floor_divide(np.minimum(last, kv_len - 1), k_block), -1).astype(np.int64)


__all__ = ["BlockDensity", "DESCRIPTION_HELP", "Documents", "FilterInputs", "diagonal_blocks", "load_npz",
           "merge", "parse_description"]
