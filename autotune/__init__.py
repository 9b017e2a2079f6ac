"""Simulator-guided Optuna search over kernel configs, validated by running the real kernels."""
