"""The search space of one kernel for one problem on one GPU target: the kernel's declared configs,
split by the simulator into those that cannot fit (with reasons) and the rest, ranked by
predicted time.

Torch-free: a `--dry-run` tuning, the CI tests and the study's sampler use it without a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from einsim.errors import ConfigError, EinsimError
from einsim.problem import Problem
from einsim.kernels.registry import KernelSpec, get_kernel
from einsim.autotune.predict import KernelPrediction, config_dict, device_limits_for, predict_kernel
from einsim.targets import load_target


def config_key(config: Any) -> str:
    """One canonical string per config: the identity trials are deduplicated by."""
    return json.dumps(config_dict(config), sort_keys=True, separators=(",", ":"))


def _sort_key(value: Any) -> tuple:
    # None first, then booleans, then numbers, then anything else by its text.
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, str(value))


@dataclass(frozen=True)
class SearchSpace:
    """Configs of `kernel` for `problem`, as the kernel declares them and the simulator sees them."""

    kernel: str
    problem: Problem
    target: str
    fields: tuple[str, ...]  # the config's field names = the Optuna parameter names
    choices: dict[str, tuple]  # field -> every value the declared space uses (sorted)
    ranked: tuple[tuple[Any, KernelPrediction], ...]  # configs that fit, fastest predicted first
    rejected: tuple[tuple[Any, tuple[str, ...]], ...]  # configs the simulator discards, with reasons
    default: Any  # the kernel's default config for this problem

    @property
    def size(self) -> int:
        return len(self.ranked)

    def prediction(self, config: Any) -> KernelPrediction | None:
        key = config_key(config)
        for candidate, prediction in self.ranked:
            if config_key(candidate) == key:
                return prediction
        return None

    def keys(self) -> list[str]:
        """Keys of the configs that fit, fastest predicted first."""
        return [config_key(config) for config, _ in self.ranked]

    def by_key(self) -> dict[str, tuple[Any, KernelPrediction]]:
        return {config_key(config): (config, prediction) for config, prediction in self.ranked}

    def config_from_params(self, params: dict[str, Any]) -> Any:
        spec = get_kernel(self.kernel)
        return spec.config_type(**{name: params[name] for name in self.fields})


def build_space(kernel: str | KernelSpec, problem: Problem, target: Any) -> SearchSpace:
    """Every config the kernel declares for `problem`, predicted on `target`.

    The kernel's own `search_space(problem)` is the universe (so the Optuna distributions stay the
    same however the simulator changes); `predict_kernel` splits it into configs that fit, ranked
    by predicted time, and configs that cannot (shared memory, registers, the kernel's checks).
    """
    spec = kernel if isinstance(kernel, KernelSpec) else get_kernel(kernel)
    target = load_target(target) if isinstance(target, str) else target
    limits = device_limits_for(target, problem.dtype)
    declared = list(spec.search_space(problem, limits))
    if not declared:
        try:  # why: the kernel's own reasons its default config cannot run this problem
            reasons = spec.config_reasons(spec.default_config(problem), problem, limits)
        except EinsimError as error:
            reasons = [str(error)]
        why = f": {'; '.join(dict.fromkeys(reasons))}" if reasons else ""
        raise ConfigError(f"{spec.name} declares no config that can run {problem.describe()}{why}")
    fields = tuple(f.name for f in dataclasses.fields(spec.config_type))
    choices = {
        name: tuple(sorted({getattr(c, name) for c in declared}, key=_sort_key)) for name in fields
    }
    ranked, rejected = [], []
    for config in declared:
        prediction = predict_kernel(spec.name, config, problem, target)
        if prediction.fits and math.isfinite(prediction.time_s):
            ranked.append((config, prediction))
        else:
            rejected.append((config, prediction.reasons or ("predicted not to fit",)))
    if not ranked:
        reasons = "; ".join(sorted({r for _, rs in rejected for r in rs})[:3])
        raise ConfigError(f"{spec.name}: none of its {len(declared)} configs fits {problem.describe()} "
                          f"on {target.name}: {reasons}")
    ranked.sort(key=lambda item: (item[1].time_s, config_key(item[0])))
    return SearchSpace(kernel=spec.name, problem=problem, target=target.name, fields=fields, choices=choices,
                       ranked=tuple(ranked), rejected=tuple(rejected), default=spec.default_config(problem))
