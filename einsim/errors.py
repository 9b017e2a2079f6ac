"""The errors einsim raises for bad input, shared by every subpackage.

Each message names where the problem is (file, line, field path or Einsum) and what would fix it;
the CLI prints it without a traceback and exits with status 2.
"""


class EinsimError(Exception):
    """Bad input from the user: a file, a field, a shape or a config that cannot be used."""


class SpecError(EinsimError):
    """A YAML spec (cascade, target, mapping, model) that is malformed or inconsistent.

    Messages read `path/to/file.yaml: field.path: expected ..., got ...`.
    """


class ShapeError(EinsimError):
    """Tensors or a workload shape that do not agree with what the operation needs."""


class ConfigError(EinsimError):
    """A kernel or mapping configuration that cannot run (does not fit, wrong constraint)."""


class EinsimWarning(UserWarning):
    """Something einsim recovered from but the user should know about: a corrupt cache file
    set aside, a dead tuning worker's trial failed, a wait that ran out."""
