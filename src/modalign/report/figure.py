"""The one way figures are made and saved: matplotlib's object API on an Agg canvas (no pyplot,
no global backend state), rendered fully in memory, then written atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write
from modalign.errors import ConfigError

FORMATS = ("png", "svg", "pdf")


def new_figure(figsize: tuple[float, float] = (6.4, 4.0)) -> Any:
    """A constrained-layout Figure with its own Agg canvas (matplotlib imported on use)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Render `fig` in the format of the file suffix (PNG, SVG or PDF) and write it atomically."""
    target = Path(path)
    fmt = target.suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise ConfigError(f"plot file {os.fspath(target)!r}: use a .png, .svg or .pdf suffix")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)  # render fully before touching the target
    if buffer.tell() == 0:
        raise ValueError("matplotlib produced an empty image")
    return atomic_write(target, lambda fh: fh.write(buffer.getvalue()))
