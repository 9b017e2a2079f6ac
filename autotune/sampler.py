"""The Optuna sampler of einsim's tuning studies: TPE that never repeats a config, never proposes
one the simulator says cannot fit, and alternates with the simulator's ranking corrected by what
was measured. A module-level class (importable, testable alone, pickle-able), with its helpers.
"""

from __future__ import annotations

import math

import optuna

from einsim.autotune.space import SearchSpace, config_dict, config_key
from einsim.autotune.storage import claim_trial, no_experimental_warnings, quiet_optuna

State = optuna.trial.TrialState


def tried_keys(study: optuna.Study, exclude_number: int | None = None, *, waiting: bool = True) -> set[str]:
    """Configs a trial has taken or is taking: complete, running, pruned, waiting in the queue
    (unless waiting=False), or failed for a reason of the config's own (a worker killed
    mid-trial leaves its config free again)."""
    keys = set()
    for t in study.get_trials(deepcopy=False):
        if t.number == exclude_number or (t.state == State.WAITING and not waiting):
            continue
        if t.state == State.FAIL and not t.user_attrs.get("failure"):
            continue
        key = t.user_attrs.get("config_key")
        if key is None:
            params = t.params or (t.system_attrs.get("fixed_params") or {})
            if not params:
                continue
            key = config_key(params)
        keys.add(key)
    return keys


def feature_vectors(space: SearchSpace) -> dict[str, list[float]]:
    """Each config as numbers scaled to [0, 1] per field: log2 for powers of two, 0/1 for
    booleans, -1 for None (automatic), so that neighbouring configs are near each other."""
    raw: dict[str, list[float]] = {}
    for key, (config, _) in space.by_key().items():
        values = []
        for name in space.fields:
            value = getattr(config, name)
            if value is None:
                values.append(-1.0)
            elif isinstance(value, bool):
                values.append(float(value))
            elif isinstance(value, (int, float)) and value > 0 and math.log2(value).is_integer():
                values.append(math.log2(value))
            else:
                values.append(float(value) if isinstance(value, (int, float)) else float(hash(value) % 7))
        raw[key] = values
    columns = list(zip(*raw.values())) if raw else []
    low = [min(c) for c in columns]
    span = [max(c) - min(c) or 1.0 for c in columns]
    return {key: [(v - lo) / sp for v, lo, sp in zip(values, low, span)] for key, values in raw.items()}


def corrected_ranking(space: SearchSpace, measured: dict[str, float], features: dict[str, list[float]],
                      bandwidth: float = 0.35, prior_weight: float = 0.5) -> list[str]:
    """The configs that fit, ranked by the simulator's prediction corrected by what was measured:
    log(predicted) plus a kernel-weighted mean of log(measured / predicted) over measured
    neighbours (shrunk toward 0 by prior_weight). The simulator is the prior; trials fix its
    systematic errors (a tile size it over-rates, a warp count it under-rates) locally."""
    predicted = {key: prediction.time_s for key, (_, prediction) in space.by_key().items()}
    residuals = [(features[k], math.log(v / predicted[k])) for k, v in measured.items()
                 if k in predicted and v > 0 and predicted[k] > 0]
    scores = {}
    for key, x in features.items():
        weight_sum, total = prior_weight, 0.0
        for y, residual in residuals:
            distance = sum((a - b) ** 2 for a, b in zip(x, y))
            weight = math.exp(-distance / (2 * bandwidth ** 2))
            weight_sum += weight
            total += weight * residual
        scores[key] = math.log(predicted[key]) + total / weight_sum
    return sorted(scores, key=lambda k: (scores[k], k))


class GuidedSampler(optuna.samplers.BaseSampler):
    """TPE over the config fields, alternating with the simulator's ranking corrected by the
    measurements so far (every `corrected_every`-th sampled trial). A TPE proposal that repeats a
    tried config or falls outside `allowed` (the configs that fit, best predicted first) is
    redrawn up to `redraws` times, then replaced by the best corrected-ranking config not yet
    tried. Enqueued trials (fixed params: the default and the simulator's seeds) pass through.
    """

    def __init__(self, space: SearchSpace, allowed: list[str], *, seed: int | None = None,
                 n_startup: int = 1, corrected_every: int = 2, redraws: int = 6) -> None:
        unknown = sorted(set(allowed) - set(space.by_key()))
        if unknown:
            raise ValueError(f"GuidedSampler: allowed configs not in the search space: {unknown[:3]}")
        self.space = space
        self.allowed = list(allowed)
        self.allowed_set = set(allowed)
        self.corrected_every = corrected_every
        self.redraws = redraws
        self.features = feature_vectors(space)
        self.params_of = {key: config_dict(config) for key, (config, _) in space.by_key().items()}
        self.distributions = {name: optuna.distributions.CategoricalDistribution(list(values))
                              for name, values in space.choices.items()}
        with quiet_optuna(), no_experimental_warnings():
            self.base = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True, n_startup_trials=max(1, n_startup))

    def ranking(self, study: optuna.Study) -> list[str]:
        """The allowed configs, best first: by prediction until a trial completes, then by the
        prediction corrected by the measurements (corrected_ranking)."""
        measured = {}
        for t in study.get_trials(deepcopy=False, states=(State.COMPLETE,)):
            key = t.user_attrs.get("config_key")
            if key is not None and t.value is not None:
                measured[key] = float(t.value)
        if not measured:
            return self.allowed
        return [k for k in corrected_ranking(self.space, measured, self.features) if k in self.allowed_set]

    def infer_relative_search_space(self, study, trial):
        return dict(self.distributions)

    def sample_relative(self, study, trial, search_space):
        if trial.system_attrs.get("fixed_params"):
            return {}
        tried = tried_keys(study, trial.number)
        use_tpe = self.corrected_every <= 0 or trial.number % self.corrected_every != 0
        for _ in range(self.redraws if use_tpe else 0):
            with no_experimental_warnings():
                params = self.base.sample_relative(study, trial, search_space)
            if len(params) < len(self.distributions):
                break  # TPE is still in its start-up trials: take the simulator's order
            key = config_key({name: params[name] for name in self.space.fields})
            if key in self.allowed_set and key not in tried:
                return params
        for key in self.ranking(study):
            if key not in tried:
                return dict(self.params_of[key])
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        # The trial is RUNNING from here, but Optuna's heartbeat thread starts only after
        # sampling: a first heartbeat now keeps a slow sampler from looking like a dead worker.
        claim_trial(study, trial._trial_id)
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
