"""Hardware targets described in YAML (GPUs and spatial accelerators): the schema, the shipped
presets and the validating loader."""
