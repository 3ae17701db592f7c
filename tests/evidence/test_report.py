"""The validation report at small n: groups below MIN_INTERVAL_N are flagged (warning, no
interval shown), tasks are not pooled when asked, and one labelled scatter PNG per measure."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modalign.evidence.correlate import MIN_INTERVAL_N, correlations
from modalign.evidence.report import measure_figure, plot_measures, point_labels, render_markdown
from modalign.evidence.validate import POOLED, correlate_rows, flag_small_n, small_groups


def _report(sizes: dict[str, int], pool: bool = True) -> dict:
    """A report of `sizes[group]` checkpoints per group, MIR and caption loss measured."""
    rng = np.random.default_rng(0)
    rows = []
    for group, n in sizes.items():
        for k in range(n):
            mir = float(rng.normal())
            rows.append({"model": f"runs/pt_{k}/model", "score": -mir + 0.3 * float(rng.normal()),
                         "group": group, "measures": {"mir": mir, "caption_loss": mir / 2}})  # fmt: skip
    table, warnings = correlate_rows(rows, resamples=200, pool=pool)
    return {"checkpoints": rows, "correlations": table, "warnings": warnings,
            "bootstrap": {"resamples": 200, "level": 0.95, "seed": 0},
            "data": {"n": 8, "fingerprint": "0" * 64}}  # fmt: skip


def test_point_labels_are_the_shortest_unique_tails():
    assert point_labels(["runs/pt_a/model", "runs/pt_b/model", "org/hub-id"]) == {
        "runs/pt_a/model": "pt_a/model", "runs/pt_b/model": "pt_b/model", "org/hub-id": "hub-id"
    }  # fmt: skip
    assert point_labels(["/x/a/m", "/y/a/m"]) == {"/x/a/m": "x/a/m", "/y/a/m": "y/a/m"}
    assert point_labels(["a", "a"]) == {"a": "a"}


def test_groups_below_the_threshold_are_flagged_at_its_edge():
    n = MIN_INTERVAL_N
    report = _report({"small": n - 1, "enough": n, "two": 2})
    assert small_groups(report) == {"small": n - 1}  # "two" has no correlation at all
    flagged = flag_small_n(report)
    assert flagged["small_n"] == {"threshold": n, "groups": {"small": n - 1}}
    assert flagged["warnings"][: len(report["warnings"])] == report["warnings"]
    [line] = flagged["warnings"][len(report["warnings"]) :]
    assert f"group 'small': {n - 1} checkpoint(s), fewer than {n}" in line
    assert small_groups(report, threshold=3) == {}


def test_markdown_leaves_out_the_intervals_of_a_small_group():
    report = flag_small_n(_report({"small": 3, "enough": MIN_INTERVAL_N + 2}))
    text = render_markdown(report)
    small = text.split("## small")[1].split("## ")[0]
    enough = text.split("## enough")[1].split("## ")[0]
    assert "3 checkpoints, fewer than 8" in small and "[" not in small.split("|---|")[1]
    assert "too few" not in enough and enough.count("[") >= 6  # intervals for every statistic
    rho = report["correlations"]["small"]["mir"]["spearman"]
    assert f"| MIR | 3 | {rho:+.2f} |" in small
    assert "## Warnings" in text and "group 'small'" in text


def test_groups_are_not_pooled_when_asked():
    assert POOLED in _report({"a": 4, "b": 4})["correlations"]
    assert list(_report({"a": 4, "b": 4}, pool=False)["correlations"]) == ["a", "b"]


def test_one_figure_per_measure_a_panel_per_group_every_point_labelled(tmp_path):
    report = flag_small_n(_report({"mme": 4, "pope": MIN_INTERVAL_N}))
    fig = measure_figure(report, "mir")
    assert len(fig.axes) == 2  # mme and pope, not the pooled group
    mme, pope = fig.axes
    assert sorted(t.get_text() for t in mme.texts) == [f"pt_{k}/model" for k in range(4)]
    assert len(pope.texts) == MIN_INTERVAL_N
    xs = sorted(float(x) for x in mme.collections[0].get_offsets()[:, 0])
    assert xs == pytest.approx(sorted(r["measures"]["mir"] for r in report["checkpoints"][:4]))
    rho = correlations([r["measures"]["mir"] for r in report["checkpoints"][:4]],
                       [r["score"] for r in report["checkpoints"][:4]])["spearman"]  # fmt: skip
    assert f"Spearman {rho:+.2f} (n=4: too few for an interval)" in mme.get_title()
    assert "[" in pope.get_title()  # enough checkpoints: the interval is shown
    paths = plot_measures(report, tmp_path)
    assert [p.name for p in paths] == ["validate-mir.png", "validate-caption_loss.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 400


def test_the_module_examples_run():
    import doctest

    import modalign.evidence.report

    result = doctest.testmod(modalign.evidence.report)
    assert result.attempted >= 1 and result.failed == 0
