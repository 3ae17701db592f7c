"""A metric over training steps (e.g. the MIR monitor's curve) as a PNG, written atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from modalign.report.figure import new_figure, save_figure


def plot_curve(
    steps: Sequence[int],
    values: Sequence[float],
    out_png: str | os.PathLike[str],
    *,
    smoothed: Sequence[float] | None = None,
    stop_step: int | None = None,
    ylabel: str = "MIR (lower is better aligned)",
    title: str = "MIR during training",
    dpi: int = 150,
) -> Path:
    """Draw values (and their smoothed curve) against steps; mark where training stopped."""
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(steps, values, marker="o", markersize=3, label="measured")
    if smoothed is not None:
        ax.plot(steps, smoothed, linestyle="--", label="smoothed (EMA)")
    if stop_step is not None:
        ax.axvline(stop_step, color="grey", linestyle=":", label=f"stopped at step {stop_step}")
    return _finish(fig, ax, out_png, ylabel, title, dpi)


def plot_curves(
    series: dict[str, tuple[Sequence[int], Sequence[float], Sequence[float], Sequence[float]]],
    out_png: str | os.PathLike[str],
    *,
    ylabel: str = "MIR (lower is better aligned)",
    title: str = "MIR during training",
    dpi: int = 150,
) -> Path:
    """Several curves, each `label -> (steps, centre, low, high)`: a line and a shaded band."""
    fig = new_figure()
    ax = fig.add_subplot()
    for label, (steps, centre, low, high) in series.items():
        (line,) = ax.plot(steps, centre, marker="o", markersize=2, label=label)
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return _finish(fig, ax, out_png, ylabel, title, dpi)


def _finish(fig, ax, out_png: str | os.PathLike[str], ylabel: str, title: str, dpi: int) -> Path:
    """Labels, grid and legend of a curve plot over steps, then the atomic save."""
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out_png, dpi)
