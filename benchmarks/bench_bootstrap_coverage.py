"""Coverage of bootstrap intervals for Spearman's rho over few checkpoints: our percentile
bootstrap (`evidence.correlate.bootstrap_intervals`) against scipy.stats.bootstrap's BCa, on
bivariate-normal data whose population Spearman is known, rho_S = (6/pi) asin(rho/2).

For each (n, rho): `--reps` data sets, each given both intervals at 95% with `--resamples`
resamples; coverage = share of data sets whose interval holds rho_S. An interval that cannot be
formed (NaN, e.g. BCa when a resample or jackknife sample has a constant column) counts as not
covering and is counted apart; so is a collapsed one (zero width, e.g. [-1, -1]). Seeded.

    python benchmarks/bench_bootstrap_coverage.py [--reps 400] [--resamples 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
from scipy import stats

from modalign.evidence.correlate import batch_statistics, bootstrap_intervals


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman of paired resamples along `axis` (scipy.stats.bootstrap's vectorized form)."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    shape = x.shape[:-1]
    flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])  # (R, n)
    return batch_statistics(flat_x, flat_y)["spearman"].reshape(shape)


def _bca(x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((x, y), _spearman, paired=True, vectorized=True, method="BCa",
                              n_resamples=resamples, confidence_level=0.95,
                              random_state=np.random.default_rng(seed))  # fmt: skip
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def _score(intervals: list[tuple[float, float]], truth: float) -> dict[str, float]:
    arr = np.asarray(intervals, dtype=float)  # (reps, 2)
    formed = np.isfinite(arr).all(axis=1)
    covered = formed & (arr[:, 0] <= truth) & (truth <= arr[:, 1])
    width = arr[formed, 1] - arr[formed, 0]
    return {
        "coverage": round(float(covered.mean()), 3),
        "no_interval": round(float((~formed).mean()), 3),
        "collapsed": round(float((width <= 1e-12).sum() / len(arr)), 3),
        "median_width": round(float(np.median(width)), 3) if len(width) else None,
    }


def simulate(ns: list[int], rhos: list[float], reps: int, resamples: int, seed: int) -> list[dict]:
    rows = []
    for rho in rhos:
        truth = 6 / math.pi * math.asin(rho / 2)
        cov = np.array([[1.0, rho], [rho, 1.0]])
        for n in ns:
            rng = np.random.default_rng([seed, n, round(rho * 100) + 100])
            pct, bca = [], []
            for r in range(reps):
                xy = rng.multivariate_normal([0.0, 0.0], cov, size=n)  # (n, 2)
                x, y = xy[:, 0], xy[:, 1]
                ci = bootstrap_intervals(x, y, resamples=resamples, seed=r)["spearman"]
                pct.append(tuple(ci) if ci else (math.nan, math.nan))
                bca.append(_bca(x, y, resamples, r))
            row = {"n": n, "rho": rho, "rho_s": round(truth, 4),
                   "percentile": _score(pct, truth), "bca": _score(bca, truth)}  # fmt: skip
            rows.append(row)
            p, b = row["percentile"], row["bca"]
            print(f"rho {rho:+.1f} n {n:3d}  percentile cov {p['coverage']:.3f} "
                  f"(none {p['no_interval']:.3f}, collapsed {p['collapsed']:.3f}, "
                  f"width {p['median_width']})  BCa cov {b['coverage']:.3f} "
                  f"(none {b['no_interval']:.3f}, collapsed {b['collapsed']:.3f}, "
                  f"width {b['median_width']})", flush=True)  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ns", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10, 15, 20, 30])
    p.add_argument("--rhos", type=float, nargs="+", default=[0.0, -0.5, -0.8])
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args()
    started = time.perf_counter()
    rows = simulate(args.ns, args.rhos, args.reps, args.resamples, args.seed)
    out = {"statistic": "spearman", "level": 0.95, "reps": args.reps,
           "resamples": args.resamples, "seed": args.seed, "scipy": __import__("scipy").__version__,
           "seconds": round(time.perf_counter() - started, 1), "rows": rows}  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    main()
