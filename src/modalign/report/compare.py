"""Side-by-side text table of several MIR results: headline numbers, then per-layer FD."""

from __future__ import annotations

import os

from modalign.errors import DataError
from modalign.metrics.result import MIRResult
from modalign.report.labels import check_labels
from modalign.report.summary import render_table

# Settings that change what MIR measures: runs that differ in one are not comparable.
COMPARABLE_SETTINGS = ("sqrt", "outliers", "outlier_k", "template", "compat", "scaling",
                       "covariance", "max_text_tokens")  # fmt: skip


def mismatches(runs: list[MIRResult], names: list[str]) -> list[str]:
    """How the runs differ in what they measure: other layers, other measuring settings (a
    difference of MIR between them would then mix what is measured with how)."""
    first, name0 = runs[0], names[0]
    out = []
    for run, name in zip(runs[1:], names[1:], strict=True):
        if list(run.layers) != list(first.layers):
            out.append(f"{name} covers layers {list(run.layers)}, {name0} {list(first.layers)}")
        differ = [k for k in COMPARABLE_SETTINGS
                  if run.settings.get(k) != first.settings.get(k)]  # fmt: skip
        if differ:
            shown = ", ".join(f"{k}={run.settings.get(k)!r} vs {first.settings.get(k)!r}"
                              for k in differ)  # fmt: skip
            out.append(f"{name} and {name0} were measured differently ({shown})")
    return out


def compare_table(
    results: list[MIRResult | dict | str],
    labels: list[str] | None = None,
    sources=None,
    *,
    allow_mismatch: bool = False,
) -> str:
    """MIR per run (with the difference to the first run), then FD per layer, one column per run.

    `results`: MIRResult objects, dicts or JSON paths; `sources` (file names) give default labels.
    Runs over other layers or measured with other settings are refused (DataError) unless
    `allow_mismatch`; the table then says how they differ.
    """
    runs = [MIRResult.load(r) for r in results]
    if sources is None and all(isinstance(r, str | os.PathLike) for r in results):
        sources = results
    names = check_labels(runs, labels, sources)
    differ = mismatches(runs, names)
    if differ and not allow_mismatch:
        raise DataError(f"not comparable: {'; '.join(differ)} (--allow-mismatch to compare anyway)")
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
    if differ:
        lines += ["", "not like for like: " + "; ".join(differ)]
    return "\n".join(lines)
