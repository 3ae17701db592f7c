"""MIR during pre-training across a study's points: each point's MIR monitor curve (the cycle
scores the probe every 100 steps), the seed mean and range per variant, and the step at which
the monitor's plateau rule would have stopped each run (the cycle only records)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modalign.train.monitor import first_plateau

CURVE = Path("pretrain") / "mir_monitor" / "mir_curve.json"


def _seed_curve(path: Path) -> dict[str, Any] | None:
    """One run's curve, with where its own rule (patience, delta, min_steps) would stop it."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    history, rule = data["history"], data["rule"]
    steps = [int(h["step"]) for h in history]
    return {
        "steps": steps,
        "mir": [float(h["mir"]) for h in history],
        "stopped_at": data.get("stopped_at"),
        "would_stop_at": first_plateau(steps, [h["smoothed"] for h in history],
                                       rule["patience"], rule["delta"], rule.get("min_steps", 0)),
        "rule": rule,
    }  # fmt: skip


def monitor_curves(points: Sequence[Any]) -> dict[str, Any]:
    """Per variant (points: `lab.study.Point`s): every seed's curve, and the mean / min / max
    over seeds at the steps all seeds scored."""
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(p.variant for p in points):
        seeds = {p.seed: _seed_curve(p.folder / CURVE) for p in points if p.variant == variant}
        seeds = {s: c for s, c in sorted(seeds.items()) if c is not None}
        if not seeds:
            continue
        common = sorted(set.intersection(*(set(c["steps"]) for c in seeds.values())))
        at = [{st: m for st, m in zip(c["steps"], c["mir"], strict=True)} for c in seeds.values()]
        values = [[a[st] for a in at] for st in common]  # (steps, seeds)
        out[variant] = {
            "steps": common,
            "mean": [sum(v) / len(v) for v in values],
            "min": [min(v) for v in values],
            "max": [max(v) for v in values],
            "per_seed": {str(s): c for s, c in seeds.items()},
        }
    return out


def _at(curve: dict[str, Any], i: int) -> str:
    return f"{curve['mean'][i]:.3f} [{curve['min'][i]:.3f}, {curve['max'][i]:.3f}]"


def curves_markdown(curves: dict[str, Any]) -> list[str]:
    """A table: MIR at the first and last scored step, the peak, and where the plateau rule
    would have stopped each seed's run."""
    if not curves:
        return []
    rule = next(iter(next(iter(curves.values()))["per_seed"].values()))["rule"]
    lines = ["## MIR during pre-training (the MIR monitor)", "",
             f"Seed mean [min, max] of the probe MIR. Plateau rule: smoothed MIR moved by less "
             f"than {rule['delta']:.0%} over the last {rule['patience']} evaluations "
             f"(EMA {rule['smoothing']}); in the cycle it only records.", "",
             "| variant | first step | MIR there | peak MIR (step) | last step | MIR there | "
             "rule would stop at (per seed) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in curves.items():
        if not c["steps"]:
            continue

        peak = max(range(len(c["steps"])), key=lambda i: c["mean"][i])
        stops = ", ".join(
            f"seed {s}: " + ("never" if r["would_stop_at"] is None else str(r["would_stop_at"]))
            for s, r in c["per_seed"].items()
        )
        lines.append(f"| {name} | {c['steps'][0]} | {_at(c, 0)} | {c['mean'][peak]:.3f} "
                     f"({c['steps'][peak]}) | {c['steps'][-1]} | {_at(c, -1)} | {stops} |")  # fmt: skip
    return [*lines, ""]


def plot_monitor_curves(curves: dict[str, Any], out_png: Path) -> Path | None:
    """Every variant's seed-mean MIR curve with its seed range as a band."""
    from modalign.report.curves import plot_curves

    series = {n: (c["steps"], c["mean"], c["min"], c["max"]) for n, c in curves.items()
              if len(c["steps"]) > 1}  # fmt: skip
    if not series:
        return None
    return plot_curves(series, out_png, title="MIR during pre-training (seed mean and range)")
