"""A validation report as Markdown (checkpoint table, correlation table per group) and as
figures: one PNG per measure (`plot_measures`: score against the measure, a panel per group,
every point labelled with its checkpoint), or one overview PNG with a panel per measure
(`plot_scatter`, the lab's study reports)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
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


def point_labels(models: Sequence[str]) -> dict[str, str]:
    """Each model's shortest path tail that no other model shares (runs/pt_a/model and
    runs/pt_b/model -> pt_a/model, pt_b/model): the name a plotted point carries.

    >>> point_labels(["runs/pt_a/model", "runs/pt_b/model"])
    {'runs/pt_a/model': 'pt_a/model', 'runs/pt_b/model': 'pt_b/model'}
    """
    unique = list(dict.fromkeys(models))
    parts = {m: Path(m).parts or (m,) for m in unique}

    def tail(m: str, k: int) -> str:
        return "/".join(parts[m][-k:])

    out = {}
    for m in unique:
        k = 1
        while k < len(parts[m]) and any(tail(m, k) == tail(o, k) for o in unique if o != m):
            k += 1
        out[m] = tail(m, k)
    return out


def _stat(stats: dict[str, Any], name: str, interval: bool = True) -> str:
    ci = stats["ci"].get(name)
    value = stats.get(name)
    if value is None:
        return "undefined"
    if ci and interval:
        return f"{value:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return f"{value:+.2f}"


def _scores_line(report: dict[str, Any]) -> list[str]:
    scores = report.get("scores")
    if not scores:
        return []
    tasks = "; ".join(f"{task}: {how['metric']} ({how['chosen_by']})"
                      for task, how in scores["tasks"].items())  # fmt: skip
    return [f"Scores from {scores['from']} ({len(scores['files'])} results files), one group "
            f"per task, not pooled; {tasks}.", ""]  # fmt: skip


def render_markdown(report: dict[str, Any], title: str = "Validation") -> str:
    """The checkpoint table and, per group, each measure's correlations with the scores."""
    rows = report["checkpoints"]
    measured = [r for r in rows if "measures" in r]
    cols = [c for c in COLUMNS if any(c in r["measures"] for r in measured)]
    boot = report["bootstrap"]
    lines = [f"# {title}", "",
             f"{len(measured)} of {len(rows)} checkpoints measured on {report['data']['n']} probe "
             f"pairs (data {report['data']['fingerprint'][:12]}).", "",
             *_scores_line(report),
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
    small = report.get("small_n") or {"groups": {}}
    for group, table in report["correlations"].items():
        lines += [f"## {group}", ""]
        few = group in small["groups"]
        if few:
            lines += [f"**{small['groups'][group]} checkpoints, fewer than {small['threshold']}: "
                      "too few for an interval to mean anything. The correlations below are "
                      "a hint, not evidence; their intervals are left out here (validate.json "
                      "keeps them).**", ""]  # fmt: skip
        lines += ["| measure | n | Spearman | Kendall | Pearson |", "|---|---|---|---|---|"]
        for name, stats in table.items():
            lines.append(f"| {MEASURES[name].label} | {stats['n']} | "
                         + " | ".join(_stat(stats, s, not few) for s in STATISTICS) + " |")  # fmt: skip
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


def _ylabel(report: dict[str, Any], group: str, default: str) -> str:
    task = ((report.get("scores") or {}).get("tasks") or {}).get(group)
    return f"{group}: {task['metric']}" if task else default


def measure_figure(report: dict[str, Any], name: str, *,
                   ylabel: str = "score after fine-tuning") -> Any:  # fmt: skip
    """Score against measure `name`: one panel per group (pooled left out: tasks may have other
    scales), each point labelled with its checkpoint, Spearman and its interval in the panel's
    title (no interval where the group is too small for one to mean anything)."""
    from modalign.evidence.validate import POOLED
    from modalign.report.figure import new_figure

    measured = [r for r in report["checkpoints"] if "measures" in r and name in r["measures"]]
    labels = point_labels([r["model"] for r in measured])
    groups = [g for g in report["correlations"] if g != POOLED and any(
              r["group"] == g for r in measured)]  # fmt: skip
    small = (report.get("small_n") or {}).get("groups") or {}
    ncols = min(3, max(1, len(groups)))
    nrows = max(1, math.ceil(len(groups) / ncols))
    fig = new_figure((4.2 * ncols, 3.4 * nrows))
    for k, group in enumerate(groups):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        pts = [(r["measures"][name], r["score"], labels[r["model"]]) for r in measured
               if r["group"] == group]  # fmt: skip
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=16, color=f"C{k % 10}")
        for x, y, label in pts:
            ax.annotate(label, (x, y), xytext=(3, 3), textcoords="offset points",
                        fontsize="x-small")  # fmt: skip
        stats = report["correlations"][group].get(name) or {"ci": {}}
        rho = _stat(stats, "spearman", group not in small) if "spearman" in stats else "-"
        few = f" (n={small[group]}: too few for an interval)" if group in small else ""
        ax.set_title(f"{group}\nSpearman {rho}{few}", fontsize="small")
        ax.set_xlabel(MEASURES[name].label, fontsize="small")
        ax.set_ylabel(_ylabel(report, group, ylabel), fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.margins(x=0.2, y=0.15)  # room for the labels inside the frame
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{MEASURES[name].label} of each checkpoint against its score", fontsize="medium")
    return fig


def plot_measures(report: dict[str, Any], out_dir: str | os.PathLike[str], *,
                  stem: str = "validate") -> list[Path]:  # fmt: skip
    """One PNG per measure the report holds, OUT_DIR/STEM-<measure>.png (`measure_figure`),
    each written atomically; returns their paths in measure order."""
    from modalign.report.figure import save_figure

    measured = [r for r in report["checkpoints"] if "measures" in r]
    names = list(dict.fromkeys(k for r in measured for k in r["measures"]))
    return [save_figure(measure_figure(report, name), Path(out_dir) / f"{stem}-{name}.png")
            for name in names]  # fmt: skip
