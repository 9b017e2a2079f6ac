"""Figures a reviewer accepts as they are: on every figure of the gallery (docs/plots.md), in the
screen and the paper style, no text leaves the figure and no two texts overlap; titles and legends
use the YAML display names; paper figures fit a two-column page; sizes are in binary units."""

from __future__ import annotations

import pytest
import yaml
from matplotlib.text import Text

from einsim.errors import ConfigError, SpecError
from einsim.plots.figure import new_figure
from einsim.plots.gallery import ANCHORS, figures
from einsim.plots.layout import text_problems
from einsim.plots.style import PAPER, resolve_style
from einsim.simulator.models import load_model, model_names, parse_model
from einsim.targets import load_target
from einsim.targets.loader import PRESET_DIR, parse_target, target_names

NAMES = tuple(figures([ANCHORS]))


def _texts(figure) -> list[str]:
    figure.draw_without_rendering()
    return [t.get_text() for t in figure.findobj(Text) if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("style", ["screen", "paper"])
@pytest.mark.parametrize("name", NAMES)
def test_no_text_leaves_the_figure_or_overlaps_another(name: str, style: str) -> None:
    figure = figures([ANCHORS], style)[name]()
    assert text_problems(figure) == []
    if style == "paper":  # one column (3.4 in) or the text width (7.16 in) of a two-column page
        assert figure.get_figwidth() <= PAPER.max_width + 1e-9
        assert max(t.get_fontsize() for t in figure.findobj(Text) if t.get_text()) <= 9


def test_the_checker_finds_text_outside_and_text_on_text() -> None:
    figure = new_figure(3.0, 2.0)
    axis = figure.add_subplot()
    axis.text(0.5, 0.5, "one label", transform=axis.transAxes)
    axis.text(0.52, 0.5, "another label", transform=axis.transAxes)
    axis.text(1.3, 0.5, "far right", transform=axis.transAxes)
    problems = text_problems(figure)
    assert any("'one label' and 'another label' overlap" in p for p in problems)
    assert any("'far right' leaves the figure" in p for p in problems)
    assert len(problems) == 2, problems


def test_titles_and_legends_use_display_names_not_ids() -> None:
    drawn = figures([ANCHORS])
    h100 = _texts(drawn["roofline-h100.png"]())
    assert "NVIDIA H100 SXM, bf16" in h100 and not any("h100-sxm" in t for t in h100)
    assert any(t.startswith("BERT-base, prefill, 4096 tokens") for t in h100)
    assert {"FlexAttention, measured", "cuDNN SDPA, measured"} <= set(h100)
    accelerators = _texts(drawn["roofline-accelerators.png"]())
    assert {"FLAT (cloud), bf16", "FuseMax (cloud), bf16"} <= set(accelerators)
    traffic = _texts(drawn["traffic-vs-buffer.png"]())
    assert "FLAT (cloud)" in traffic
    # One unit convention: memory sizes and traffic in binary units, as the CLI prints them.
    assert "Off-chip traffic (GiB)" in traffic and not any(t.endswith(" GB") for t in traffic)
    # The 3-pass curve's rise at small buffers is explained on the figure itself.
    assert any("re-chosen for least latency" in t for t in traffic)
    speedup = _texts(drawn["speedup.png"]())
    assert "Transformer-XL" in speedup and any(t.startswith("FuseMax: ") and t.endswith("(geomean)") for t in speedup)


def test_every_preset_has_a_display_name() -> None:
    for name in target_names():
        target = load_target(name)
        assert target.display_name and target.label == target.display_name, name
    for name in model_names():
        assert load_model(name).display_name, name


def test_a_blank_display_name_is_a_named_error() -> None:
    document = {"name": "x", "display_name": " ", "hidden": 64, "heads": 1, "head_dim": 64, "ffn": 128, "batch": 1}
    with pytest.raises(SpecError, match="display_name"):
        parse_model(document)
    with pytest.raises(SpecError, match="display_name"):
        parse_target({**yaml.safe_load((PRESET_DIR / "h200.yaml").read_text()), "display_name": ""})


def test_an_unknown_style_is_a_config_error() -> None:
    assert resolve_style("paper") is PAPER
    with pytest.raises(ConfigError, match="screen, paper"):
        resolve_style("poster")
