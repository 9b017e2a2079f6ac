"""Figures without a display: every plot draws on a matplotlib Figure with an Agg canvas (never
pyplot's global state), and `save_figure` writes PNG, SVG or PDF by the file's suffix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from einsim.errors import ConfigError
from einsim.files import is_folder
from einsim.plots.style import Style, resolve_style

FORMATS = ("png", "svg", "pdf")

# Okabe & Ito's colour-blind-safe palette, for cascades and designs.
SERIES_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def series_color(index: int) -> str:
    return SERIES_COLORS[index % len(SERIES_COLORS)]


def new_figure(width: float, height: float, style: Style | str | None = None) -> Figure:
    """A Figure with an Agg canvas and constrained layout (legends outside the axes fit), at the
    style's raster resolution (the screen style's when None)."""
    figure = Figure(figsize=(width, height), layout="constrained", dpi=resolve_style(style).dpi)
    FigureCanvasAgg(figure)
    return figure


@contextmanager
def drawing(style: Style) -> Iterator[None]:
    """Within the block, text and lines take the style's sizes (matplotlib's rcParams)."""
    with rc_context(style.rc()):
        yield


def save_figure(figure: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """Write `figure` to `path` (.png, .svg or .pdf, by its suffix; PNG at `dpi`, by default the
    figure's own, which its style chose). A bad path is a ConfigError before any drawing, never a
    matplotlib traceback. PDF text is TrueType (editable, no Type 3 fonts that paper systems refuse)."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ConfigError(f"{path}: expected a file name ending in {', '.join('.' + f for f in FORMATS)}, "
                          f"got {path.suffix or 'no suffix'!r}")
    if not is_folder(path.parent):
        raise ConfigError(f"{path}: the folder {str(path.parent)!r} does not exist; create it or write elsewhere")
    # No timestamps in the files: regenerated figures only change when the data does.
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[suffix]
    try:
        with rc_context({"svg.hashsalt": "einsim", "pdf.fonttype": 42}):  # stable ids
            figure.savefig(path, format=suffix, dpi=dpi or figure.dpi, metadata=metadata)
    except OSError as error:
        raise ConfigError(f"{path}: cannot write the figure: {error.strerror or error}") from None
    return path
