"""A float32 NumPy transcription of the official MIR code (shikiw/Modality-Integration-Rate,
`mir.py` + `mir_util.py`, default `--mode fast`), independent of modalign, for the tests.

Per layer, on float32 tokens:
- text-centric scale: alpha = 1 / mean ||f_t|| over the text tokens, both sets multiplied by it;
- `replace_outliers_with_median_l2` per modality: norms, outlier = |norm - median(norm)| >
  3 std(norm) (torch conventions: lower median, unbiased std), outlier rows replaced by the
  per-dimension lower median (`torch.median(data, dim=0)`) of the scaled set;
- `calculate_fid_pytorch`: means (summed pairwise, see `mean0`), unbiased covariances, and the no-op Newton-Schulz iteration
  (Y = A is its fixed point), i.e. ||mu_v - mu_t||^2 + tr S_v + tr S_t - 2 tr(S_v S_t);
- MIR = math.log(sum of the per-layer values, 10).
"""

from __future__ import annotations

import math

import numpy as np


def lower_median(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """torch.median's rule: the lower of the two middle values, sorted[(n - 1) // 2]."""
    return np.take(np.sort(x, axis=axis), (x.shape[axis] - 1) // 2, axis=axis)


def replace_outliers_with_median_l2(data: np.ndarray) -> tuple[np.ndarray, int]:
    norms = np.linalg.norm(data, axis=-1)  # float32
    median_norm = lower_median(norms)
    std_dev = norms.std(ddof=1)
    outliers = np.abs(norms - median_norm) > np.float32(3) * std_dev
    data = data.copy()
    data[outliers, :] = lower_median(data, axis=0)
    return data, int(outliers.sum())


def mean0(x: np.ndarray) -> np.ndarray:
    """Column means in float32 with pairwise summation, as torch's cascade-sum reductions.

    (NumPy reduces axis 0 of a C-ordered array by adding rows one after another: in float32
    that error grows like n eps and, at 60,000 tokens, alone moves MIR by ~1e-6.)
    """
    return np.ascontiguousarray(x.T).mean(axis=1)


def fid_fast(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = mean0(a), mean0(b)
    cov_a = np.cov(a, rowvar=False, dtype=np.float32)
    cov_b = np.cov(b, rowvar=False, dtype=np.float32)
    covmean = cov_a @ cov_b  # the official "matrix_sqrt" returns its input unchanged
    diff = mu_a - mu_b
    fid = np.sum(diff**2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)
    return float(fid)


def official_mir(
    vision: list[np.ndarray], text: list[np.ndarray]
) -> tuple[float, list[float], list[int], list[int]]:
    """(MIR, per-layer values, vision outliers per layer, text outliers per layer)."""
    per_layer, out_v, out_t = [], [], []
    for v, t in zip(vision, text, strict=True):
        v, t = v.astype(np.float32), t.astype(np.float32)
        scale = np.float32(1.0) / np.linalg.norm(t, axis=-1).mean(axis=0)
        v, t = scale * v, scale * t
        v, nv = replace_outliers_with_median_l2(v)
        t, nt = replace_outliers_with_median_l2(t)
        per_layer.append(fid_fast(v, t))
        out_v.append(nv)
        out_t.append(nt)
    return math.log(sum(per_layer), 10), per_layer, out_v, out_t
