"""Independent float64 NumPy/SciPy reference for MIR (no modalign code), used by the tests."""

from __future__ import annotations

import numpy as np
from scipy import linalg


def fd_scipy(xa: np.ndarray, xb: np.ndarray) -> float:
    mu_a, mu_b = xa.mean(0), xb.mean(0)
    ca, cb = np.cov(xa, rowvar=False), np.cov(xb, rowvar=False)
    root = linalg.sqrtm(ca @ cb)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(root).real)


def lower_median(v: np.ndarray) -> float:
    return float(np.sort(v)[(len(v) - 1) // 2])


def handle_outliers(x: np.ndarray, mode: str, k: float = 3.0) -> tuple[np.ndarray, int]:
    if mode == "none":
        return x, 0
    norms = np.linalg.norm(x, axis=1)
    out = np.abs(norms - lower_median(norms)) > k * norms.std(ddof=1)
    if mode == "drop":
        return x[~out], int(out.sum())
    med = np.array([lower_median(col) for col in x.T])
    y = x.copy()
    y[out] = med
    return y, int(out.sum())


def mir_reference(vision: list[np.ndarray], text: list[np.ndarray], mode: str = "drop"):
    per_layer = []
    for v, t in zip(vision, text, strict=True):
        v, t = v.astype(np.float64), t.astype(np.float64)
        alpha = 1.0 / np.linalg.norm(t, axis=1).mean()
        v2, _ = handle_outliers(v, mode)
        t2, _ = handle_outliers(t, mode)
        per_layer.append(fd_scipy(alpha * v2, alpha * t2))
    return float(np.log10(sum(per_layer))), per_layer
