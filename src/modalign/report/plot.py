"""Per-layer modality gap plot (FD after scaling vs layer), like the MIR paper's Figure 2 right."""

from __future__ import annotations

import os
from pathlib import Path

from modalign.errors import ConfigError
from modalign.metrics.result import MIRResult
from modalign.report.figure import new_figure, save_figure
from modalign.report.labels import check_labels


def choose_log_scale(values: list[float], log_scale: bool | None) -> bool:
    """The y scale: as asked, or (None) log when all values are positive and span over 100x."""
    positive = min(values) > 0
    if log_scale is None:
        return positive and max(values) > 100 * min(values)
    if log_scale and not positive:
        raise ConfigError("log scale needs positive per-layer distances (some are <= 0)")
    return log_scale


def plot_layers(
    results: list[MIRResult | dict | str],
    labels: list[str] | None,
    out_png: str | os.PathLike[str],
    *,
    log_scale: bool | None = None,
    title: str | None = None,
    dpi: int = 150,
) -> Path:
    """Draw one line per run (FD_k vs layer k) and write the image atomically; returns the path.

    `log_scale=None` picks a log y axis when all values are positive and span more than 100x.
    Uses matplotlib's object API with an Agg canvas, so no global backend or pyplot state is
    touched; the output format follows the file suffix (PNG unless .svg/.pdf is given).
    """
    from matplotlib.ticker import MaxNLocator  # heavy: import on use only

    runs = [MIRResult.load(r) for r in results]
    sources = results if all(isinstance(r, str | os.PathLike) for r in results) else None
    names = check_labels(runs, labels, sources)
    log_scale = choose_log_scale([v for run in runs for v in run.per_layer], log_scale)
    fig = new_figure()
    ax = fig.add_subplot()
    for name, run in zip(names, runs, strict=True):
        ax.plot(
            run.layers, run.per_layer, marker="o", markersize=3, label=f"{name} (MIR {run.mir:.3f})"
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("modality gap: FD after text-centric scaling")
    if log_scale:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3, which="both" if log_scale else "major")
    ax.set_title(title if title is not None else "Per-layer modality gap")
    ax.legend(fontsize="small")
    return save_figure(fig, out_png, dpi)
