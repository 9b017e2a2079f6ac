"""Hardware targets described in YAML (GPUs and spatial accelerators): the schema, the shipped
presets and the validating loader."""

from einsim.targets.loader import load_target, parse_target, target_names
from einsim.targets.spec import ComputeUnit, MemoryLevel, Target

__all__ = ["ComputeUnit", "MemoryLevel", "Target", "load_target", "parse_target", "target_names"]
