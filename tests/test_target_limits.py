"""Target files that used to load with a silently wrong machine: a count of 1e45, a per-SM count
given for the whole chip (every compute time scaled by the SM count)."""

from __future__ import annotations

from pathlib import Path

import pytest

from einsim.errors import SpecError
from einsim.targets import load_target
from einsim.targets.loader import PRESET_DIR

H100 = (PRESET_DIR / "h100-sxm.yaml").read_text()


@pytest.mark.parametrize("edit, message", [
    (("  count: 132\n", "  count: 1e45\n"), "parallel_units.count: expected a positive integer"),
    (("  count: 132\n", "  count: 1000000000000000000\n"), "parallel_units.count: expected a positive integer up to"),
    (("    count: 4                       # per SM", "    count: 528                     # per SM"),
     r"compute.tensor_core.datasheet_peak.bf16: expected a peak near the 7.07e\+16 ops/s its counts imply .*"
     r"counts are per SM\), got '4.95e\+14 ops/s'"),
])
def test_implausible_counts_are_named(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in H100
    path = tmp_path / "t.yaml"
    path.write_text(H100.replace(edit[0], edit[1], 1))
    with pytest.raises(SpecError, match=message):
        load_target(str(path))
