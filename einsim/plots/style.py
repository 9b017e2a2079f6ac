"""Figure styles: sizes and fonts for a screen (docs, notebooks) or a two-column paper page.

Every plot takes `style=` ("screen" by default, or "paper"; `--style` on the command line). A
paper figure is one column wide (3.4 in) when it has one panel and the full text width (7.16 in)
otherwise, with 7-8 pt text so it can be placed at 100 % without scaling; it is saved at 300 dpi
when written as PNG (PDF and SVG are vector either way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from einsim.errors import ConfigError


@dataclass(frozen=True)
class Style:
    name: str
    panel_width: float  # inches per panel
    panel_height: float  # inches
    max_width: float  # a figure is never wider (inches)
    font: float  # axis labels and titles (points)
    small: float  # tick labels, legends, annotations
    tiny: float  # labels of many small things (Einsums on a roofline, geometric means)
    marker: float  # area of a main marker (points^2)
    line: float  # width of a main line (points)
    dpi: int  # raster output (PNG)
    legend_below: bool  # a figure-wide legend under the panels (paper) or beside them (screen)

    def width(self, panels: int, extra: float = 0.0) -> float:
        """The figure width for `panels` panels side by side plus `extra` inches (a legend)."""
        return min(self.max_width, self.panel_width * panels + extra)

    def rc(self) -> dict[str, Any]:
        """matplotlib rcParams for text created while drawing (labels, titles, legends, ticks)."""
        return {"font.size": self.small, "axes.titlesize": self.font, "axes.labelsize": self.font,
                "xtick.labelsize": self.small, "ytick.labelsize": self.small, "legend.fontsize": self.small,
                "figure.titlesize": self.font, "lines.linewidth": self.line, "savefig.dpi": self.dpi}


SCREEN = Style(name="screen", panel_width=6.0, panel_height=4.4, max_width=15.0, font=11, small=9, tiny=7.5,
               marker=80, line=2.0, dpi=100, legend_below=False)
# A two-column page (IEEE/ACM): a column is 3.3-3.5 in wide, the text 7.0-7.16 in.
PAPER = Style(name="paper", panel_width=3.4, panel_height=2.5, max_width=7.16, font=8, small=7, tiny=6,
              marker=28, line=1.2, dpi=300, legend_below=True)
STYLES = {style.name: style for style in (SCREEN, PAPER)}


def resolve_style(style: Style | str | None) -> Style:
    """A Style from its name ("screen", "paper") or itself; None is the screen style."""
    if style is None:
        return SCREEN
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise ConfigError(f"--style {style!r}: expected one of {', '.join(STYLES)}")
    return STYLES[style]
