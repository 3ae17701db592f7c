"""Gap terms: the decomposition matches a scipy float64 FD; scaling vision tokens moves the
text-centric FD but not the own-scaling control nor the cosine gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from modalign.evidence.gap_terms import gap_terms, terms_of_tokens
from tests.models.conftest import make_pairs


def _shell(g, n: int, d: int, offset: float, radius: float) -> torch.Tensor:
    """Directions around `offset`, norms uniform in [radius, 1.01 radius]: no token is a 3-sigma
    norm outlier (uniform deviations stay within 1.8 sigma), so MIR drops nothing."""
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + offset
    norms = radius * (1 + 0.01 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    return x / x.norm(dim=1, keepdim=True) * norms


def _sets(seed: int, n: int = 400, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    vision = [_shell(g, n, d, 1.0, 2.0) for _ in range(2)]
    text = [_shell(g, n + 50, d, 0.0, 1.0) for _ in range(2)]
    return vision, text


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum()), float(
        np.trace(ca) + np.trace(cb) - 2 * np.trace(cross)
    )


def test_terms_match_scipy():
    vision, text = _sets(0)
    out = terms_of_tokens(vision, text, [1, 2])
    for k, row in enumerate(out["layers"]):
        alpha = 1.0 / text[k].norm(dim=1).mean().item()
        mean_term, cov_term = _scipy_fd(vision[k].numpy() * alpha, text[k].numpy() * alpha)
        assert row["mean_term"] == pytest.approx(mean_term, rel=1e-8)
        assert row["cov_term"] == pytest.approx(cov_term, rel=1e-6, abs=1e-10)
        assert row["norm_ratio"] == pytest.approx(vision[k].norm(dim=1).mean().item() * alpha)
    assert out["mir"] == pytest.approx(np.log10(sum(r["fd"] for r in out["layers"])))


def test_scaling_vision_moves_fd_but_not_the_scale_free_controls():
    vision, text = _sets(1)
    base = terms_of_tokens(vision, text, [1, 2])
    grown = terms_of_tokens([v * 3 for v in vision], text, [1, 2])
    for a, b in zip(base["layers"], grown["layers"], strict=True):
        assert b["fd"] > 2 * a["fd"] and b["norm_ratio"] == pytest.approx(3 * a["norm_ratio"])
        assert b["fd_own_scaling"] == pytest.approx(a["fd_own_scaling"], rel=1e-9)
        assert b["cosine_gap"] == pytest.approx(a["cosine_gap"], rel=1e-9)
    assert grown["mir_own_scaling"] == pytest.approx(base["mir_own_scaling"], rel=1e-9)


def test_on_a_model_the_mir_is_the_runners(tiny_adapter):
    from modalign.measure.run import RunOptions, run_mir

    adapter = tiny_adapter("llava")
    pairs = make_pairs(8)
    out = gap_terms(adapter, pairs)
    want = run_mir(adapter, pairs, RunOptions(progress=False)).mir
    assert out["mir"] == pytest.approx(want, rel=1e-5)
    assert [r["layer"] for r in out["layers"]] == adapter.layer_ids()
