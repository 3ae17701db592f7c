"""A validation report as Markdown (checkpoint table, correlation table per group) and as a PNG
of score-vs-measure scatter panels, one per measure."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from modalign.evidence.correlate import STATISTICS
from modalign.evidence.measures import MEASURES

COLUMNS = ("mir", "caption_loss", "perplexity", "mmd", "kid", "centroid_gap", "cosine_gap")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _short(model: str) -> str:
    parts = Path(model).parts
    return "/".join(parts[-3:]) if len(parts) > 3 else model


def _stat(stats: dict[str, Any], name: str) -> str:
    ci = stats["ci"].get(name)
    value = stats.get(name)
    if value is None:
        return "undefined"
    return f"{value:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{value:+.2f}"


def render_markdown(report: dict[str, Any], title: str = "Validation") -> str:
    """The checkpoint table and, per group, each measure's correlations with the scores."""
    rows = report["checkpoints"]
    measured = [r for r in rows if "measures" in r]
    cols = [c for c in COLUMNS if any(c in r["measures"] for r in measured)]
    boot = report["bootstrap"]
    lines = [f"# {title}", "",
             f"{len(measured)} of {len(rows)} checkpoints measured on {report['data']['n']} probe "
             f"pairs (data {report['data']['fingerprint'][:12]}).", "",
             "| checkpoint | group | score | " + " | ".join(MEASURES[c].label for c in cols) + " |",
             "|" + "---|" * (3 + len(cols))]  # fmt: skip
    for r in rows:
        if "measures" in r:
            cells = [_fmt(r["measures"].get(c), ".4g") for c in cols]
        else:
            cells = [f"failed: {r['error'][:60]}"] + [""] * (len(cols) - 1)
        lines.append(f"| {_short(r['model'])} | {r['group']} | {r['score']:.4g} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "Correlation of each measure with the score, with "
              f"{boot['level']:.0%} bootstrap intervals ({boot['resamples']} resamples of the "
              "checkpoints). Every measure is lower-is-better aligned, so a measure that "
              "predicts the scores has a **negative** correlation.", ""]  # fmt: skip
    for group, table in report["correlations"].items():
        lines += [f"## {group}", "", "| measure | n | Spearman | Kendall | Pearson |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, stats in table.items():
            lines.append(f"| {MEASURES[name].label} | {stats['n']} | "
                         + " | ".join(_stat(stats, s) for s in STATISTICS) + " |")  # fmt: skip
        lines.append("")
    if report["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in report["warnings"]], ""]
    return "\n".join(lines)


def plot_scatter(report: dict[str, Any], out_png: str | os.PathLike[str], *,
                 ylabel: str = "score after fine-tuning") -> Path:  # fmt: skip
    """One panel per measure: score against the measure, a colour per group, Spearman in the
    panel's title (of the pooled group when there are several)."""
    from modalign.evidence.validate import POOLED
    from modalign.report.figure import new_figure, save_figure

    measured = [r for r in report["checkpoints"] if "measures" in r]
    names = list(dict.fromkeys(k for r in measured for k in r["measures"]))
    ncols = min(4, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = new_figure((3.2 * ncols, 2.8 * nrows))
    groups = list(dict.fromkeys(r["group"] for r in measured))
    corr = report["correlations"]
    overall = corr.get(POOLED) or (corr.get(groups[0]) if groups else None) or {}
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for g, group in enumerate(groups):
            pts = [(r["measures"][name], r["score"]) for r in measured
                   if r["group"] == group and name in r["measures"]]  # fmt: skip
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=14, color=f"C{g % 10}", label=group)
        rho = overall.get(name, {}).get("spearman")
        ax.set_title(f"{MEASURES[name].label}\nSpearman {_fmt(rho, '+.2f')}", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(True, alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel(ylabel, fontsize="small")
    if len(groups) > 1 and names:
        fig.axes[0].legend(fontsize="xx-small")
    return save_figure(fig, out_png)
