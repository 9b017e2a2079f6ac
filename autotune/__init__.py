"""Simulator-guided Optuna search over kernel configs, validated by running the real kernels.

`tune(kernel, problem, target, trials=, storage=, study_name=, dry_run=)` runs (or resumes) a
study and returns a `TuningResult`; `einsim.kernels.tuned.export_best` writes the winner to the
tuned-config store the kernels' launchers read. docs/autotune.md.
"""

from einsim.autotune.evaluate import GpuEvaluator, Measurement, PredictionEvaluator, ReplayEvaluator
from einsim.autotune.space import SearchSpace, build_space, config_key
from einsim.autotune.storage import DEFAULT_STORAGE
from einsim.autotune.result import TrialRecord, TuningResult, load_result
from einsim.autotune.sampler import GuidedSampler
from einsim.autotune.naming import default_study_name
from einsim.autotune.study import TuningInterrupted, tune

__all__ = [
    "DEFAULT_STORAGE", "GpuEvaluator", "GuidedSampler", "Measurement", "PredictionEvaluator", "ReplayEvaluator", "SearchSpace",
    "TrialRecord", "TuningInterrupted", "TuningResult", "build_space", "config_key", "default_study_name",
    "load_result", "tune",
]
