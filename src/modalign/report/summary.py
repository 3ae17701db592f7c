"""A one-screen text summary of one MIR result: headline, settings, per-layer table."""

from __future__ import annotations

import textwrap
from typing import Any

from modalign.metrics.result import MIRResult


def fmt_value(value: Any) -> str:
    """Compact rendering of a settings/metadata value for one line of text."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple) and len(value) > 8:
        return f"[{', '.join(map(str, value[:3]))}, ... {len(value)} items]"
    return str(value)


def repeats_text(rep: dict[str, float]) -> str:
    """'3.3712 +- 0.0100 (std; range 3.35 .. 3.39; 10 subsets of 100)'."""
    of = f" of {int(rep['n'])}" if "n" in rep else ""
    return (
        f"{rep['mean']:.4f} +- {rep['std']:.4f} (std; range {rep['min']:.4f} .. {rep['max']:.4f}; "
        f"{int(rep['repeats'])} subsets{of})"
    )


def layer_rows(run: MIRResult) -> list[list[str]]:
    """Per-layer rows: layer, FD, share of the total, n_vision, n_text, outliers v/t."""
    total = run.total
    rows = []
    for i, (layer, fd) in enumerate(zip(run.layers, run.per_layer, strict=True)):
        share = f"{100 * fd / total:.1f}" if total > 0 else "-"
        outliers = f"{run.outliers_vision[i]}/{run.outliers_text[i]}"
        rows.append(
            [str(layer), f"{fd:.4g}", share, str(run.n_vision[i]), str(run.n_text[i]), outliers]
        )
    return rows


def render_table(
    header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)
) -> list[str]:
    """Fixed-width columns, right-aligned except the column indices in `left`."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (
            cell.ljust(w) if c in left else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def summary_table(result: MIRResult | dict | str) -> str:
    """MIR, model, N and settings, then one row per layer (FD, share, token and outlier counts)."""
    run = MIRResult.load(result)
    n = run.n_samples
    lines = [
        f"MIR       {run.mir:.4f}   (log10 of the summed per-layer FD over {len(run.layers)} layers; "
        "lower is better aligned)",
        f"model     {run.model or '(not recorded)'}",
        f"samples   {n if n is not None else '(not recorded)'}",
    ]
    data = run.metadata.get("data")
    if isinstance(data, dict) and data:
        lines.append("data      " + ", ".join(f"{k}={v}" for k, v in data.items()))
    if run.repeats:
        lines.append(f"repeats   {repeats_text(run.repeats)}")
    if run.settings:
        settings = ", ".join(f"{k}={fmt_value(v)}" for k, v in sorted(run.settings.items()))
        lines += textwrap.wrap(
            settings, width=100, initial_indent="settings  ", subsequent_indent=" " * 10
        )
    header = ["layer", "FD", "share%", "n_vision", "n_text", "outliers v/t"]
    lines += ["", *render_table(header, layer_rows(run))]
    return "\n".join(lines)
