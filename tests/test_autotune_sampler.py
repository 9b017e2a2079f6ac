"""autotune.sampler.GuidedSampler on its own: importable, pickle-able, never repeats a config,
never leaves the configs that fit, follows the simulator before TPE has data."""

from __future__ import annotations

import pickle

import pytest

optuna = pytest.importorskip("optuna")

from einsim.autotune.sampler import GuidedSampler, corrected_ranking, feature_vectors, tried_keys  # noqa: E402
from einsim.autotune.space import build_space, config_key  # noqa: E402
from einsim.problem import Problem  # noqa: E402

DECODE = Problem(batch=8, q_heads=32, kv_heads=8, q_len=1, kv_len=8192, head_dim=128)


@pytest.fixture(scope="module")
def space():
    return build_space("decode", DECODE, "h100-sxm")


def _study(sampler):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="minimize", sampler=sampler)


def _objective(space):
    predicted = {key: prediction.time_s for key, (_, prediction) in space.by_key().items()}

    def objective(trial):
        params = {name: trial.suggest_categorical(name, list(space.choices[name])) for name in space.fields}
        trial.set_user_attr("config_key", config_key(params))
        return predicted[config_key(params)] * (1.3 if params.get("num_warps") == 8 else 1.0)

    return objective


def test_the_sampler_pickles_and_keeps_proposing(space):
    sampler = GuidedSampler(space, space.keys()[:12], seed=3, n_startup=2)
    clone = pickle.loads(pickle.dumps(sampler))
    assert isinstance(clone, GuidedSampler) and clone.allowed == sampler.allowed
    study = _study(clone)
    study.optimize(_objective(space), n_trials=6)
    assert len(study.trials) == 6


def test_it_follows_the_simulator_first_and_never_repeats_or_leaves_the_space(space):
    allowed = space.keys()[:10]
    study = _study(GuidedSampler(space, allowed, seed=0, n_startup=4))
    study.optimize(_objective(space), n_trials=10)
    keys = [t.user_attrs["config_key"] for t in study.trials]
    assert keys[0] == allowed[0]  # before any measurement: the best prediction
    assert len(set(keys)) == len(keys) == 10 and set(keys) == set(allowed)
    assert tried_keys(study) == set(allowed)


def test_allowed_configs_outside_the_space_are_refused(space):
    with pytest.raises(ValueError, match="not in the search space"):
        GuidedSampler(space, ["{\"BLOCK_N\":7}"])


def test_the_corrected_ranking_moves_configs_like_a_slow_measured_one_down(space):
    features = feature_vectors(space)
    base = corrected_ranking(space, {}, features)
    assert base == sorted(base, key=lambda k: (space.by_key()[k][1].time_s, k))
    slow = base[0]
    measured = {slow: space.by_key()[slow][1].time_s * 10}
    assert corrected_ranking(space, measured, features).index(slow) > 0
