"""A study's MIR monitor curves: seed mean/range at common steps, and where the plateau rule
would have stopped each run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from modalign.atomic import atomic_write_json
from modalign.lab.study_curves import CURVE, curves_markdown, monitor_curves, plot_monitor_curves

RULE = {"kind": "plateau", "patience": 2, "delta": 0.01, "smoothing": 0.5, "min_steps": 0,
        "stop": False}  # fmt: skip


def _point(root: Path, variant: str, seed: int, mir: list[float], steps: list[int]):
    folder = root / variant / f"seed{seed}"
    smoothed, s = [], None
    for m in mir:
        s = m if s is None else 0.5 * s + 0.5 * m
        smoothed.append(s)
    history = [{"step": st, "mir": m, "smoothed": sm}
               for st, m, sm in zip(steps, mir, smoothed, strict=True)]  # fmt: skip
    atomic_write_json(folder / CURVE, {"rule": RULE, "every": 100, "n_probe": 4,
                                       "stopped_at": None, "history": history})  # fmt: skip
    return SimpleNamespace(variant=variant, seed=seed, folder=folder)


def test_mean_range_at_common_steps_and_the_would_stop_step(tmp_path):
    points = [
        _point(tmp_path, "a", 0, [2.0, 1.5, 1.5, 1.5, 1.5], [0, 100, 200, 300, 400]),
        _point(tmp_path, "a", 1, [2.2, 1.7, 1.2, 1.0], [0, 100, 200, 300]),  # shorter run
        _point(tmp_path, "b", 0, [3.0, 2.0, 1.0], [0, 100, 200]),
        SimpleNamespace(variant="c", seed=0, folder=tmp_path / "none"),  # no monitor: left out
    ]
    curves = monitor_curves(points)
    assert set(curves) == {"a", "b"}
    a = curves["a"]
    assert a["steps"] == [0, 100, 200, 300]
    assert a["mean"] == pytest.approx([2.1, 1.6, 1.35, 1.25])
    assert a["min"] == [2.0, 1.5, 1.2, 1.0] and a["max"] == [2.2, 1.7, 1.5, 1.5]
    # seed 0 smoothed: 2, 1.75, 1.625, 1.5625, 1.53125; |s_t - s_{t-2}| < 1%: never
    assert a["per_seed"]["0"]["would_stop_at"] is None
    flat = monitor_curves([_point(tmp_path, "f", 0, [1.0, 1.0, 1.0, 1.0], [0, 10, 20, 30])])
    assert flat["f"]["per_seed"]["0"]["would_stop_at"] == 20  # third evaluation: 2 back equal
    text = "\n".join(curves_markdown(curves))
    assert "| a | 0 | 2.100 [2.000, 2.200] | 2.100 (0) | 300 | 1.250 [1.000, 1.500] |" in text
    assert "seed 0: never, seed 1: never" in text
    png = plot_monitor_curves(curves, tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert curves_markdown({}) == [] and plot_monitor_curves({}, tmp_path / "x.png") is None
