"""Targets: every preset loads and is physically sensible; every malformed field gets a SpecError
naming the file, the field path and what was expected; units parse once, correctly."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from einsim.errors import SpecError
from einsim.targets import load_target, loader, parse_target, target_names
from einsim import units

PRESETS = ["h100-sxm", "h200", "a100-80gb", "fusemax-cloud", "fusemax-edge", "flat-cloud", "flat-edge", "unfused-cloud", "unfused-edge"]
PRESET_DIR = Path(__file__).resolve().parent.parent / "targets" / "presets"


def test_the_issue_presets_are_all_shipped():
    assert set(PRESETS) <= set(target_names())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_with_one_unit_of_each_kind(name):
    target = load_target(name)
    assert target.name == name
    for kind in ("matrix", "vector", "exp"):
        ops, _ = target.peak_ops_per_s(target.unit(kind))
        assert ops > 0
    assert len(target.memory_levels) >= 3
    capacities = [level.total_capacity_bytes for level in target.memory_levels]
    assert capacities[-1] == max(capacities), "the outermost level is the largest"
    assert target.offchip.bandwidth() < target.memory_levels[-2].bandwidth(), "off-chip is the narrowest"
    assert target.sources, "every preset cites its sources"
    text = (PRESET_DIR / f"{name}.yaml").read_text()
    assert "Sources:" in text or "sources" in text


def test_gpu_presets_keep_datasheet_and_measured_apart():
    h100 = load_target("h100-sxm")
    datasheet, used = h100.peak_ops_per_s("tensor_core", "bf16", "datasheet")
    assert used == "datasheet" and datasheet == pytest.approx(989.4e12 / 2)
    measured, used = h100.peak_ops_per_s("tensor_core", "bf16", "measured")
    assert used == "measured" and measured == pytest.approx(798e12 / 2)
    assert h100.offchip.bandwidth("datasheet") == pytest.approx(3.35e12)
    assert h100.offchip.bandwidth("measured") == pytest.approx(3.0e12)
    assert h100.parallel_units == 132 and h100.memory("shared_memory").capacity_bytes == 228 * 1024
    # the derived peak (ops/cycle x count x SMs x clock) uses the 1.98 GHz boost clock
    derived, _ = h100.peak_ops_per_s("tensor_core", "bf16", "derived")
    assert derived == pytest.approx(512 * 4 * 132 * 1.98e9)
    # SFUs: 16 ex2 per clock per SM
    assert h100.peak_ops_per_s("sfu")[0] == pytest.approx(16 * 132 * 1.98e9)


def test_fusemax_computes_exp_on_the_2d_array_with_six_macs():
    fusemax = load_target("fusemax-cloud")
    exp = fusemax.unit("exp")
    assert exp.via == "pe_2d" and exp.ops_per_exp == 6
    macs, _ = fusemax.peak_ops_per_s("pe_2d")
    assert macs == pytest.approx(256 * 256 * 940e6)
    assert fusemax.peak_ops_per_s(exp)[0] == pytest.approx(macs / 6)
    assert fusemax.offchip.bandwidth() == pytest.approx(400 * 2**30)
    assert load_target("fusemax-edge").offchip.bandwidth() == pytest.approx(50 * 2**30)
    assert load_target("flat-cloud").memory("global_buffer").capacity_bytes == 32 * 2**20
    assert load_target("flat-edge").memory("global_buffer").capacity_bytes == 512 * 2**10


def test_a_users_yaml_path_works_like_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    document = yaml.safe_load((PRESET_DIR / "h100-sxm.yaml").read_text())
    document["name"] = "mine"
    path.write_text(yaml.safe_dump(document))
    target = load_target(str(path))
    assert target.name == "mine" and target.parallel_units == 132


def test_unknown_target_lists_the_presets():
    with pytest.raises(SpecError, match="h100-sxm") as error:
        load_target("h1000")
    assert "unknown target 'h1000'" in str(error.value)


def _h100() -> dict:
    return yaml.safe_load((PRESET_DIR / "h100-sxm.yaml").read_text())


def _error(document: dict) -> str:
    with pytest.raises(SpecError) as error:
        parse_target(document, "targets/h100-sxm.yaml")
    return str(error.value)


def test_negative_bandwidth_names_file_field_and_expectation():
    document = _h100()
    document["memory"][2]["bandwidth"] = "-3 TB/s"
    assert _error(document) == (
        "targets/h100-sxm.yaml: memory[2].bandwidth: expected a positive bandwidth such as '3.35 TB/s', got '-3 TB/s'"
    )


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["memory"][3].__setitem__("bandwidth", "3.35 TB"), "memory[3].bandwidth: expected a positive bandwidth such as '3.35 TB/s', got '3.35 TB'"),
        (lambda d: d["memory"][3].__setitem__("bandwidth", "3.35 XB/s"), "memory[3].bandwidth: expected a positive bandwidth"),
        (lambda d: d["memory"][1].__setitem__("capacity", "228 KiBs"), "memory[1].capacity: expected a positive size such as '228 KiB', got '228 KiBs'"),
        (lambda d: d["memory"][1].pop("capacity"), "memory[1].capacity: expected this required field, got nothing (missing)"),
        (lambda d: d["memory"][0].__setitem__("bandwith", "1 TB/s"), "memory[0].bandwith: expected one of the known fields"),
        (lambda d: d["memory"][0].__setitem__("accesses_per_cycle", {"read": -1, "write": 1}),
         "memory[0].accesses_per_cycle.read: expected a number of word accesses >= 0, got -1"),
        (lambda d: d.__setitem__("clock", "1.98"), "clock: expected a positive frequency such as '1.98 GHz', got '1.98'"),
        (lambda d: d.__setitem__("clock", 1.98e9), "clock: expected a positive frequency such as '1.98 GHz', got 1980000000.0"),
        (lambda d: d.__setitem__("kind", "tpu"), "kind: expected one of 'gpu', 'spatial', got 'tpu'"),
        (lambda d: d.pop("word_size"), "word_size: expected this required field"),
        (lambda d: d["parallel_units"].__setitem__("count", -1), "parallel_units.count: expected a positive integer, got -1"),
        (lambda d: d["parallel_units"].__setitem__("count", "132"), "parallel_units.count: expected a positive integer, got '132'"),
        (lambda d: d["compute"]["tensor_core"]["ops_per_cycle"].__setitem__("bf17", 512), "compute.tensor_core.ops_per_cycle.bf17: expected a dtype key"),
        (lambda d: d["compute"]["tensor_core"]["ops_per_cycle"].__setitem__("bf16", -512), "compute.tensor_core.ops_per_cycle.bf16: expected a positive number, got -512"),
        (lambda d: d["compute"]["tensor_core"].__setitem__("kind", "systolic"), "compute.tensor_core.kind: expected one of 'matrix', 'vector', 'exp'"),
        (lambda d: d["compute"]["sfu"].__setitem__("energy_per_op", {"fp32": "2 pJ/B"}), "compute.sfu.energy_per_op.fp32: expected a non-negative energy per operation"),
        (lambda d: d["compute"]["tensor_core"].__setitem__("measured_peak", {"bf16": "709 TB/s"}), "compute.tensor_core.measured_peak.bf16: expected a positive throughput such as '989 TFLOP/s', got '709 TB/s'"),
        (lambda d: d["compute"].pop("sfu"), "compute: expected at least one unit of kind 'exp'"),
        (lambda d: d["compute"]["sfu"].__setitem__("via", "nothing"), "compute.sfu.ops_per_cycle: expected nothing"),
        (lambda d: d["memory"][3].__setitem__("read_energy", "3.9 pJ/furlong"), "memory[3].read_energy: expected a non-negative energy per byte, bit or word"),
        (lambda d: d.__setitem__("memory", d["memory"][:1]), "memory: expected a list of at least two levels"),
        (lambda d: d.__setitem__("colour", "green"), "colour: expected one of the known fields"),
        (lambda d: d["memory"][2].__setitem__("name", "hbm"), "memory[3].name: expected a name not used by another level, got 'hbm'"),
    ],
)
def test_malformed_field_gets_a_spec_error_naming_file_and_path(mutate, message):
    document = copy.deepcopy(_h100())
    mutate(document)
    text = _error(document)
    assert text.startswith("targets/h100-sxm.yaml: ")
    assert message in text


def test_via_must_name_an_existing_unit():
    document = yaml.safe_load((PRESET_DIR / "fusemax-cloud.yaml").read_text())
    document["compute"]["exp"]["via"] = "pe_3d"
    with pytest.raises(SpecError, match=r"fusemax.yaml: compute.exp.via: expected the name of another compute unit"):
        parse_target(document, "fusemax.yaml")


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml:\d+:\d+: not valid YAML") as caught:
        load_target(str(path))
    assert "\n" not in str(caught.value)  # one line, as the CLI prints it
    with pytest.raises(SpecError, match="no such target file"):
        load_target(str(tmp_path / "absent.yaml"))


def test_only_safe_load_is_used():
    from einsim.yamlio import LimitedSafeLoader

    assert issubclass(LimitedSafeLoader, yaml.SafeLoader)  # the one reader (einsim/yamlio.py)
    root = Path(loader.__file__).resolve().parent.parent
    for path in root.glob("[!.]*/**/*.py"):
        if "build" in path.parts or path.name.startswith("test_"):
            continue
        source = path.read_text()
        assert not any(unsafe in source for unsafe in ("yaml.load(", "FullLoader", "UnsafeLoader", "unsafe_load",
                                                       "yaml.Loader")), path


@pytest.mark.parametrize(
    "text, kind, value",
    [
        ("3.35 TB/s", "bandwidth", 3.35e12),
        ("400 GiB/s", "bandwidth", 400 * 2**30),
        ("8 Gb/s", "bandwidth", 1e9),
        ("228 KiB", "bytes", 228 * 1024),
        ("50 MB", "bytes", 50e6),
        ("16 B", "bytes", 16),
        ("1.98 GHz", "frequency", 1.98e9),
        ("940 MHz", "frequency", 940e6),
        ("0.5 pJ", "energy", 0.5e-12),
        ("0.3 pJ/MAC", "energy", 0.3e-12),
        ("0.5 pJ/B", "energy_per_byte", 0.5e-12),
        ("3.9 pJ/bit", "energy_per_byte", 3.9e-12 * 8),
        ("989.4 TFLOP/s", "throughput", 989.4e12),
        ("3 us", "time", 3e-6),
        ("1e3 B", "bytes", 1000),
    ],
)
def test_units_parse(text, kind, value):
    assert units.parse_quantity(text, kind) == pytest.approx(value)


def test_units_guess_the_kind_and_refuse_unknown_units():
    assert units.parse_quantity("3.35 TB/s") == pytest.approx(3.35e12)
    assert units.parse_quantity("1.98 GHz") == pytest.approx(1.98e9)
    assert units.parse_energy_per_byte("2 pJ/word", word_bytes=2) == pytest.approx(1e-12)
    for bad in ("3 parsecs", "fast", "", "3 TB/fortnight"):
        with pytest.raises(ValueError):
            units.parse_quantity(bad, "bandwidth")
    with pytest.raises(ValueError):
        units.parse_energy_per_byte("2 pJ/word")  # needs the word size


def test_cli_lists_and_shows_targets():
    run = lambda *a: subprocess.run([sys.executable, "-m", "einsim", *a], capture_output=True, text=True)
    listing = run("targets", "list")
    assert listing.returncode == 0 and "fusemax-cloud" in listing.stdout and "h100-sxm" in listing.stdout
    shown = run("targets", "show", "h100-sxm")
    assert shown.returncode == 0 and "tensor_core" in shown.stdout and "228 KiB" in shown.stdout
    bad = run("targets", "show", "h1000")
    assert bad.returncode == 2 and "unknown target" in bad.stderr and "Traceback" not in bad.stderr


def test_spatial_presets_carry_dataflow_and_per_kind_energies():
    flat, fusemax = load_target("flat-cloud"), load_target("fusemax-cloud")
    assert flat.dataflow == "flat" and fusemax.dataflow == "fusemax" and load_target("h100-sxm").dataflow is None
    assert flat.unit("exp").via is None and flat.unit("exp").shape == (256,)
    assert flat.energy_per_op("pe_1d", op_kind="max") == pytest.approx(0.028e-12)
    assert flat.energy_per_op("pe_1d", op_kind="div") == pytest.approx(36.25e-12)
    assert flat.energy_per_op("pe_1d") == pytest.approx(17.16e-12)  # kinds not listed: energy_per_op
    assert fusemax.energy_per_op("exp") == pytest.approx(6 * 17.16e-12)


def test_per_kind_energy_and_dataflow_are_validated():
    document = yaml.safe_load((PRESET_DIR / "flat-cloud.yaml").read_text())
    document["compute"]["pe_1d"]["energy_per_op_kind"]["sqrt"] = "1 pJ"
    with pytest.raises(SpecError, match=r"f.yaml: compute.pe_1d.energy_per_op_kind.sqrt: expected an op kind"):
        parse_target(document, "f.yaml")
    document = yaml.safe_load((PRESET_DIR / "flat-cloud.yaml").read_text())
    document["dataflow"] = "tileflow"
    with pytest.raises(SpecError, match=r"f.yaml: dataflow: expected one of 'unfused', 'flat', 'fusemax', got 'tileflow'"):
        parse_target(document, "f.yaml")


def test_a_register_level_states_its_accesses_per_cycle_and_flats_pes_use_the_eyeriss_template():
    flat, fusemax = load_target("flat-cloud"), load_target("fusemax-cloud")
    assert (flat.memory("pe_registers").reads_per_cycle, flat.memory("pe_registers").writes_per_cycle) == (3, 3)
    assert (fusemax.memory("pe_registers").reads_per_cycle, fusemax.memory("pe_registers").writes_per_cycle) == (2, 1)
