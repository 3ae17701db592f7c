"""Side-by-side text table of several MIR results: headline numbers, then per-layer FD."""

from __future__ import annotations

import os

from modalign.metrics.result import MIRResult
from modalign.report.labels import check_labels
from modalign.report.summary import render_table


def compare_table(
    results: list[MIRResult | dict | str], labels: list[str] | None = None, sources=None
) -> str:
    """MIR per run (with the difference to the first run), then FD per layer, one column per run.

    `results`: MIRResult objects, dicts or JSON paths; `sources` (file names) give default labels.
    """
    runs = [MIRResult.load(r) for r in results]
    if sources is None and all(isinstance(r, str | os.PathLike) for r in results):
        sources = results
    names = check_labels(runs, labels, sources)
    base = runs[0].mir
    head_rows = [
        [
            name,
            f"{run.mir:.4f}",
            f"{run.mir - base:+.4f}",
            str(len(run.layers)),
            str(run.n_samples) if run.n_samples is not None else "-",
            run.model or "-",
        ]
        for name, run in zip(names, runs, strict=True)
    ]
    header = ["run", "MIR", "dMIR", "layers", "N", "model"]
    if any(run.repeats for run in runs):  # uncertainty from seeded subsets, where recorded
        header.insert(3, "mean +- std (R)")
        for row, run in zip(head_rows, runs, strict=True):
            rep = run.repeats
            cell = f"{rep['mean']:.4f} +- {rep['std']:.4f} ({int(rep['repeats'])})" if rep else "-"
            row.insert(3, cell)
    lines = render_table(header, head_rows, left=(0, len(header) - 1))
    all_layers = sorted({layer for run in runs for layer in run.layers})
    by_layer = [dict(zip(run.layers, run.per_layer, strict=True)) for run in runs]
    layer_rows = [
        [str(layer), *(f"{fd[layer]:.4g}" if layer in fd else "-" for fd in by_layer)]
        for layer in all_layers
    ]
    lines += ["", "per-layer FD (after text-centric scaling); dMIR = MIR - MIR of the first run"]
    lines += render_table(["layer", *names], layer_rows)
    return "\n".join(lines)
