"""Traces during pre-training across a study's points: each point's MIR monitor curve (the cycle
scores the probe every 100 steps) and, where the connector keeps the patch grid, its
recalled-word accuracy; the seed mean and range per variant; for MIR also the step at which the
monitor's plateau rule would have stopped each run (the cycle only records)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.train import first_plateau


@dataclass(frozen=True)
class Trace:
    """Where a point keeps one trace, the value it plots, and how it is labelled."""

    path: Path  # under the point's folder
    value: str  # the history entries' field
    label: str
    fmt: str


TRACES = {
    "mir": Trace(Path("pretrain/mir_monitor/mir_curve.json"), "mir",
                 "MIR (lower is better aligned)", ".3f"),
    "recall": Trace(Path("pretrain/recall_trace/recall_curve.json"), "accuracy",
                    "recalled-word accuracy (layer 0)", ".3f"),
}  # fmt: skip


def _seed_curve(data: dict[str, Any] | None, value: str) -> dict[str, Any] | None:
    """One run's curve; with a stopping rule (the MIR monitor), where it would stop the run."""
    if data is None:
        return None
    history = data["history"]
    steps = [int(h["step"]) for h in history]
    curve = {"steps": steps, "values": [float(h[value]) for h in history],
             "stopped_at": data.get("stopped_at")}  # fmt: skip
    rule = data.get("rule")
    if rule is not None:
        curve["rule"] = rule
        curve["would_stop_at"] = first_plateau(steps, [h["smoothed"] for h in history],
                                               rule["patience"], rule["delta"],
                                               rule.get("min_steps", 0))  # fmt: skip
    return curve


def trace_curves(points: Sequence[Any], trace: str = "mir") -> dict[str, Any]:
    """Per variant (points: `lab.study.Point`s, read through `read_json`): every seed's curve,
    and the mean / min / max over seeds at the steps all seeds scored."""
    spec = TRACES[trace]
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(p.variant for p in points):
        seeds = {p.seed: _seed_curve(p.read_json(spec.path), spec.value)
                 for p in points if p.variant == variant}  # fmt: skip
        seeds = {s: c for s, c in sorted(seeds.items()) if c is not None}
        if not seeds:
            continue
        common = sorted(set.intersection(*(set(c["steps"]) for c in seeds.values())))
        at = [dict(zip(c["steps"], c["values"], strict=True)) for c in seeds.values()]
        values = [[a[st] for a in at] for st in common]  # (steps, seeds)
        out[variant] = {
            "steps": common,
            "mean": [sum(v) / len(v) for v in values],
            "min": [min(v) for v in values],
            "max": [max(v) for v in values],
            "per_seed": {str(s): c for s, c in seeds.items()},
        }
    return out


def study_traces(points: Sequence[Any]) -> dict[str, Any]:
    """Every trace some point has: {trace: {variant: curve}}."""
    return {name: c for name in TRACES if (c := trace_curves(points, name))}


def _at(curve: dict[str, Any], i: int, fmt: str) -> str:
    return f"{curve['mean'][i]:{fmt}} [{curve['min'][i]:{fmt}}, {curve['max'][i]:{fmt}}]"


def curves_markdown(traces: dict[str, Any]) -> list[str]:
    """Per trace a table: the value at the first and last scored step and at its extreme (MIR's
    peak, recall's best), and for MIR where the plateau rule would have stopped each seed."""
    lines: list[str] = []
    for name, curves in traces.items():
        spec = TRACES[name]
        rows = {n: c for n, c in curves.items() if c["steps"]}
        if not rows:
            continue
        rule = next(iter(next(iter(rows.values()))["per_seed"].values())).get("rule")
        head = f"## {spec.label} during pre-training"
        lines += [head, "", "Seed mean [min, max] on the probe."
                  + (f" MIR monitor's plateau rule: smoothed MIR within a band of "
                     f"{rule['delta']:.0%} over the last {rule['patience']} evaluations (EMA "
                     f"{rule['smoothing']}); in the cycle it only records." if rule else ""), ""]  # fmt: skip
        extreme = "peak" if name == "mir" else "best"
        cols = ["variant", "first step", "value", f"{extreme} (step)", "last step", "value"]
        if rule:
            cols.append("rule would stop at (per seed)")
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for variant, c in rows.items():
            best = max(range(len(c["steps"])), key=lambda i: c["mean"][i])
            cells = [variant, str(c["steps"][0]), _at(c, 0, spec.fmt),
                     f"{c['mean'][best]:{spec.fmt}} ({c['steps'][best]})", str(c["steps"][-1]),
                     _at(c, -1, spec.fmt)]  # fmt: skip
            if rule:
                cells.append(", ".join(
                    f"seed {s}: " + ("never" if r.get("would_stop_at") is None
                                     else str(r["would_stop_at"]))
                    for s, r in c["per_seed"].items()))  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot_traces(traces: dict[str, Any], stem: Path) -> list[Path]:
    """STEM-TRACE-curves.png per trace: every variant's seed mean with its seed range."""
    from modalign.report import plot_curves

    written = []
    for name, curves in traces.items():
        series = {n: (c["steps"], c["mean"], c["min"], c["max"]) for n, c in curves.items()
                  if len(c["steps"]) > 1}  # fmt: skip
        if series:
            png = stem.parent / f"{stem.name}-{name}-curves.png"
            label = TRACES[name].label
            written.append(plot_curves(series, png, ylabel=label, title=f"{label.split(' (')[0]} "
                                       "during pre-training (seed mean and range)"))  # fmt: skip
    return written
