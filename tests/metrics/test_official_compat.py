"""`--compat official` (outliers="median", sqrt="official") reproduces the official MIR code.

The reference is an independent float32 NumPy transcription of the official functions
(`official_reference.py`) on a real-run-sized set: 60,000 vision tokens per layer.
"""

import warnings

import numpy as np
import pytest
import torch

from modalign.metrics import compute_mir

from .official_reference import official_mir


def _layers(seed: int, k: int = 3, n_v: int = 60_000, n_t: int = 20_000, d: int = 16):
    """Well-conditioned float32 tokens; vision far from text (as in real models, the mean gap
    dominates FD), massive-activation outliers in vision (600 > the 512-row tail cache, so the
    filtering and the median pass share one re-feed) and a few long text tokens."""
    rng = np.random.default_rng(seed)
    vision, text = [], []
    for i in range(k):
        mix_v = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
        mix_t = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
        v = rng.normal(size=(n_v, d)) @ mix_v * (1 + 0.5 * i) + rng.normal(size=d) * 3 + 6.0
        t = rng.normal(size=(n_t, d)) @ mix_t * (2 + 0.3 * i) + rng.normal(size=d)
        v[rng.choice(n_v, 600, replace=False), :3] *= 40.0
        t[rng.choice(n_t, 30, replace=False)] *= 8.0
        vision.append(v.astype(np.float32))
        text.append(t.astype(np.float32))
    return vision, text


@pytest.mark.parametrize("seed", [0, 1])
def test_compat_official_equals_the_official_code(seed):
    vision, text = _layers(seed)
    ref, ref_layers, out_v, out_t = official_mir(vision, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = compute_mir(
            [torch.from_numpy(v) for v in vision],
            [torch.from_numpy(t) for t in text],
            outliers="median",
            sqrt="official",
        )
    assert res.outliers_vision == out_v and res.outliers_text == out_t
    assert min(out_v) > 512  # more than the tail cache: the outlier re-feed ran too
    assert res.settings["passes"] == 2  # ... sharing the pass with the exact median
    assert res.mir == pytest.approx(ref, abs=1e-6)
    np.testing.assert_allclose(res.per_layer, ref_layers, rtol=1e-6)
