"""Rank and linear correlation of a measure with scores over checkpoints, with bootstrap
confidence intervals (checkpoints resampled with replacement, seeded, percentile intervals;
not scipy.stats.bootstrap's BCa, which gives no interval at all for most data sets of 5 or
fewer checkpoints - a resample or jackknife sample with a constant column has no correlation -
and covers no better from 8 on: benchmarks/bench_bootstrap_coverage.py).

The statistics are computed for a whole batch of resamples at once (rows of an (R, n) array):
Spearman = Pearson of average ranks, Kendall's tau-b from pair signs, Pearson; each matches
scipy.stats on every row (tests) and is NaN where undefined (a constant row).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

STATISTICS = ("spearman", "kendall", "pearson")

# Fewer checkpoints than this and a 95% bootstrap interval of a correlation does not mean
# anything. Simulated (benchmarks/bench_bootstrap_coverage.py: bivariate normal, population
# Spearman known, 1000 data sets per cell; benchmarks/results/bootstrap_coverage.json): at
# n <= 5 up to 55% of the intervals collapse to one point (three checkpoints in one order give
# [-1, -1]), the median interval spans all of [-1, 1] (n = 4 and 5, correlation 0 or -0.5)
# and coverage falls to 0.45-0.91; at n = 6 and 7 still 5% and 3% collapse when the
# correlation is strong (-0.8); from n = 8 (to 30) coverage is 0.94-0.98 at every correlation
# tried (0, -0.5, -0.8) and at most 0.5% collapse. Exactly: with n <= 4 even a perfect ranking
# is not significant at 5% (two-sided permutation p = 2/n! >= 1/12).
MIN_INTERVAL_N = 8


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (R, n) arrays; NaN for a constant row."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / den
    r[den == 0] = np.nan
    return np.clip(r, -1.0, 1.0)


def _kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair: sum(sx*sy) / sqrt(#untied x pairs * #untied y pairs)."""
    i, j = np.triu_indices(x.shape[1], k=1)
    sx = np.sign(x[:, i] - x[:, j])  # (R, n(n-1)/2)
    sy = np.sign(y[:, i] - y[:, j])
    den = np.sqrt((sx != 0).sum(axis=1) * (sy != 0).sum(axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx * sy).sum(axis=1) / den
    tau[den == 0] = np.nan
    return np.clip(tau, -1.0, 1.0)


def batch_statistics(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Spearman, Kendall (tau-b) and Pearson of every row of x (R, n) with the same row of y."""
    from scipy.stats import rankdata

    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    return {
        "spearman": _pearson_rows(rankdata(x, axis=1), rankdata(y, axis=1)),
        "kendall": _kendall_rows(x, y),
        "pearson": _pearson_rows(x, y),
    }


def correlations(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Spearman, Kendall (tau-b) and Pearson of x with y; None where undefined (fewer than 3
    points, or a constant x or y)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} values against {len(y)} scores")
    if len(x) < 3:
        return dict.fromkeys(STATISTICS)
    stats = batch_statistics(x[None], y[None])
    return {k: (float(v[0]) if math.isfinite(v[0]) else None) for k, v in stats.items()}


def bootstrap_intervals(
    x: Sequence[float], y: Sequence[float], *, resamples: int = 1000, level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float] | None]:  # fmt: skip
    """Percentile intervals of each statistic over `resamples` resamplings of the checkpoints;
    resamples where a statistic is undefined (e.g. one checkpoint drawn n times) are left out."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or resamples < 1:
        return dict.fromkeys(STATISTICS)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), size=(resamples, len(x)))  # (R, n) checkpoint indices
    stats = batch_statistics(x[pick], y[pick])
    alpha = (1 - level) / 2
    out: dict[str, list[float] | None] = {}
    for name, values in stats.items():
        values = values[np.isfinite(values)]
        out[name] = (
            [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]
            if len(values)
            else None
        )
    return out
