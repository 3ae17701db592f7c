"""A study's MIR monitor curves: seed mean/range at common steps, and where the plateau rule
would have stopped each run."""

from __future__ import annotations

from pathlib import Path

import pytest
from modalign_lab.studies.curves import (
    TRACES,
    curves_markdown,
    plot_traces,
    study_traces,
    trace_curves,
)
from modalign_lab.studies.study import Point

from modalign.atomic import atomic_write_json

RULE = {"kind": "plateau", "patience": 2, "delta": 0.01, "smoothing": 0.5, "min_steps": 0,
        "stop": False}  # fmt: skip


def _bare(variant: str, seed: int, folder: Path) -> Point:
    """A point with nothing but its folder (the traces are read from there)."""
    return Point(variant, seed, folder, report={}, evals={}, image_tokens=0,
                 pretrain_s_per_step=0.0)  # fmt: skip


def _point(root: Path, variant: str, seed: int, mir: list[float], steps: list[int]):
    folder = root / variant / f"seed{seed}"
    smoothed, s = [], None
    for m in mir:
        s = m if s is None else 0.5 * s + 0.5 * m
        smoothed.append(s)
    history = [{"step": st, "mir": m, "smoothed": sm}
               for st, m, sm in zip(steps, mir, smoothed, strict=True)]  # fmt: skip
    atomic_write_json(folder / TRACES["mir"].path, {"rule": RULE, "every": 100, "n_probe": 4,
                                       "stopped_at": None, "history": history})  # fmt: skip
    return _bare(variant, seed, folder)


def test_mean_range_at_common_steps_and_the_would_stop_step(tmp_path):
    points = [
        _point(tmp_path, "a", 0, [2.0, 1.5, 1.5, 1.5, 1.5], [0, 100, 200, 300, 400]),
        _point(tmp_path, "a", 1, [2.2, 1.7, 1.2, 1.0], [0, 100, 200, 300]),  # shorter run
        _point(tmp_path, "b", 0, [3.0, 2.0, 1.0], [0, 100, 200]),
        _bare("c", 0, tmp_path / "none"),  # no monitor: left out
    ]
    curves = trace_curves(points, "mir")
    assert set(curves) == {"a", "b"}
    a = curves["a"]
    assert a["steps"] == [0, 100, 200, 300]
    assert a["mean"] == pytest.approx([2.1, 1.6, 1.35, 1.25])
    assert a["min"] == [2.0, 1.5, 1.2, 1.0] and a["max"] == [2.2, 1.7, 1.5, 1.5]
    # seed 0 smoothed: 2, 1.75, 1.625, 1.5625, 1.53125; |s_t - s_{t-2}| < 1%: never
    assert a["per_seed"]["0"]["would_stop_at"] is None
    flat = trace_curves([_point(tmp_path, "f", 0, [1.0, 1.0, 1.0, 1.0], [0, 10, 20, 30])])
    assert flat["f"]["per_seed"]["0"]["would_stop_at"] == 20  # third evaluation: 2 back equal
    # a recall trace beside MIR on one point: its own table and PNG, no stopping rule
    atomic_write_json(points[0].folder / TRACES["recall"].path, {"every": 100, "stopped_at": None,
                      "history": [{"step": 0, "accuracy": 0.1, "by_kind": {}},
                                  {"step": 100, "accuracy": 0.4, "by_kind": {}}]})  # fmt: skip
    traces = study_traces(points)
    assert set(traces) == {"mir", "recall"} and set(traces["recall"]) == {"a"}
    assert traces["recall"]["a"]["mean"] == [0.1, 0.4]
    assert "rule" not in traces["recall"]["a"]["per_seed"]["0"]
    text = "\n".join(curves_markdown(traces))
    assert "| a | 0 | 2.100 [2.000, 2.200] | 2.100 (0) | 300 | 1.250 [1.000, 1.500] |" in text
    assert "seed 0: never, seed 1: never" in text
    assert "| a | 0 | 0.100 [0.100, 0.100] | 0.400 (100) | 100 | 0.400 [0.400, 0.400] |" in text
    pngs = plot_traces(traces, tmp_path / "study")
    assert [p.name for p in pngs] == ["study-mir-curves.png", "study-recall-curves.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert curves_markdown({}) == [] and plot_traces({}, tmp_path / "x") == []
