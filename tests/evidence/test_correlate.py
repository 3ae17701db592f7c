"""Correlation statistics against scipy; bootstrap intervals: seeded, containing the estimate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from modalign.evidence.correlate import batch_statistics, bootstrap_intervals, correlations


def _scipy(x, y):
    return {"spearman": stats.spearmanr(x, y).statistic,
            "kendall": stats.kendalltau(x, y).statistic,  # tau-b, scipy's default
            "pearson": stats.pearsonr(x, y).statistic}  # fmt: skip


FIXED = [
    ([1.2, 0.8, 1.5, 0.9, 1.1], [0.61, 0.70, 0.55, 0.66, 0.66]),  # a tie in y
    ([3, 1, 2, 2, 5, 4, 4, 0], [1, 0, 1, 1, 3, 2, 1, 0]),  # ties in both
    ([0.1, 0.2, 0.3], [0.3, 0.2, 0.1]),  # exactly -1
]


@pytest.mark.parametrize(("x", "y"), FIXED)
def test_matches_scipy_on_fixed_data(x, y):
    got = correlations(x, y)
    for name, want in _scipy(x, y).items():
        assert got[name] == pytest.approx(want, abs=1e-12), name


def test_batch_rows_match_scipy_row_by_row():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(40, 9)).astype(float)  # many ties
    y = x * 0.3 + rng.normal(size=(40, 9))
    got = batch_statistics(x, y)
    for r in range(40):
        if np.ptp(x[r]) == 0:
            continue
        for name, want in _scipy(x[r], y[r]).items():
            assert got[name][r] == pytest.approx(want, abs=1e-12), (name, r)


def test_undefined_cases_are_none():
    assert correlations([1, 2], [2, 1]) == dict.fromkeys(("spearman", "kendall", "pearson"))
    assert correlations([1, 1, 1], [1, 2, 3])["spearman"] is None
    assert correlations([1, 2, 3], [5, 5, 5])["pearson"] is None
    with pytest.raises(ValueError, match="values against"):
        correlations([1, 2, 3], [1, 2])


def test_bootstrap_is_seeded_and_contains_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(size=20)
    y = -0.7 * x + rng.normal(scale=0.5, size=20)
    point = correlations(x, y)
    a = bootstrap_intervals(x, y, resamples=500, seed=3)
    assert a == bootstrap_intervals(x, y, resamples=500, seed=3)
    assert a != bootstrap_intervals(x, y, resamples=500, seed=4)
    for name, (lo, hi) in a.items():
        assert lo <= point[name] <= hi, name
        assert hi - lo > 0.01
    wide = bootstrap_intervals(x, y, resamples=500, seed=3, level=0.99)
    assert wide["spearman"][0] <= a["spearman"][0] and wide["spearman"][1] >= a["spearman"][1]


def test_bootstrap_needs_three_points_and_a_valid_level():
    assert bootstrap_intervals([1, 2], [2, 1])["kendall"] is None
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals([1, 2, 3], [1, 2, 3], level=1.5)


def test_the_small_n_threshold_reproduces_at_small_scale():
    """MIN_INTERVAL_N's evidence (benchmarks/bench_bootstrap_coverage.py), on fewer data sets:
    three checkpoints often give a collapsed interval and BCa none at all; at the threshold the
    percentile interval covers the population Spearman and rarely collapses."""
    import importlib.util
    from pathlib import Path

    from modalign.evidence.correlate import MIN_INTERVAL_N

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_bootstrap_coverage.py"
    spec = importlib.util.spec_from_file_location("bench_bootstrap_coverage", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    small, enough = bench.simulate([3, MIN_INTERVAL_N], [-0.8], reps=120, resamples=400, seed=1)
    assert small["percentile"]["collapsed"] > 0.3 and small["bca"]["no_interval"] > 0.9
    assert enough["percentile"]["coverage"] >= 0.9 and enough["percentile"]["collapsed"] < 0.03
