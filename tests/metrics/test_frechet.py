import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg

from modalign.metrics import (
    SQRT_BACKENDS,
    frechet_distance,
    frechet_distance_tokens,
    newton_schulz_sqrt,
    trace_sqrt_product,
)

from .reference import fd_scipy


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return rng.normal(size=(n, d)) @ mix + shift


def _stats(x: np.ndarray):
    return x.mean(0), np.cov(x, rowvar=False)


@settings(max_examples=15, deadline=None)
@given(d=st.integers(2, 48), seed=st.integers(0, 1000))
def test_exact_matches_scipy_reference_well_conditioned(d, seed):
    xa, xb = _gauss(6 * d + 10, d, seed), _gauss(5 * d + 10, d, seed + 1, shift=0.7)
    ref = fd_scipy(xa, xb)
    got = frechet_distance(*_stats(xa), *_stats(xb), sqrt="exact")
    assert got == pytest.approx(ref, rel=1e-8)


def test_known_value_diagonal():
    # sqrt(diag(1,4) diag(9,1)) = diag(3, 2): FD = 2 + 5 + 10 - 2*5 = 7
    mu_a, mu_b = np.zeros(2), np.ones(2)
    ca, cb = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    for sqrt in ("exact", "newton_schulz", "scipy"):
        assert frechet_distance(mu_a, ca, mu_b, cb, sqrt=sqrt) == pytest.approx(7.0, rel=1e-10)


def test_official_mode_reproduces_official_arithmetic():
    # The official loop (Y0=A, Z0=I, Y<-(Y+Z^-1 A)/2, Z<-(Z+Y^-1 A)/2) stays at A = S_a S_b,
    # so its "FD" is 2 + 5 + 10 - 2 * tr(diag(9, 4)) = -9 by hand.
    mu_a, mu_b = np.zeros(2), np.ones(2)
    ca, cb = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    with pytest.warns(UserWarning, match="not a Fréchet distance"):
        got = frechet_distance(mu_a, ca, mu_b, cb, sqrt="official")
    assert got == pytest.approx(-9.0, rel=1e-6)
    # non-diagonal, well-conditioned: official = |dmu|^2 + tr a + tr b - 2 tr(a b). (On an
    # ill-conditioned product the official float32 loop drifts away from A, and so do we.)
    rng = np.random.default_rng(3)
    xa, xb = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) * 1.5 + 0.5
    (ma, ca), (mb, cb) = _stats(xa), _stats(xb)
    expect = ((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(ca @ cb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert frechet_distance(ma, ca, mb, cb, sqrt="official") == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("n_a,n_b,d", [(10, 12, 40), (5, 300, 40), (300, 7, 40), (3, 3, 64)])
def test_exact_on_rank_deficient_covariances(n_a, n_b, d):
    xa, xb = _gauss(n_a, d, 1), _gauss(n_b, d, 2, shift=0.3)
    got = frechet_distance(*_stats(xa), *_stats(xb), sqrt="exact")
    # independent reference: nuclear norm of the centered cross product (SVD in NumPy)
    ca_c, cb_c = xa - xa.mean(0), xb - xb.mean(0)
    nuc = np.linalg.svd(ca_c @ cb_c.T, compute_uv=False).sum() / np.sqrt((n_a - 1) * (n_b - 1))
    (ma, ca), (mb, cb) = _stats(xa), _stats(xb)
    ref = ((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * nuc
    assert np.isfinite(got) and got >= 0
    assert got == pytest.approx(ref, rel=1e-8)
    assert frechet_distance_tokens(xa, xb) == pytest.approx(ref, rel=1e-9)


def test_scipy_sqrtm_is_unreliable_where_exact_is_not():
    # Two rank-1 covariances in d=30: scipy's sqrtm of the singular product is ill-defined.
    xa, xb = _gauss(2, 30, 5), _gauss(2, 30, 6)
    (ma, ca), (mb, cb) = _stats(xa), _stats(xb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(ca @ cb)
    exact = frechet_distance(ma, ca, mb, cb)
    assert np.isfinite(exact) and exact >= 0
    nuc = np.abs(np.dot(xa[1] - xa[0], xb[1] - xb[0])) / 2.0  # exact tr sqrt for rank 1 sets
    assert trace_sqrt_product(ca, cb) == pytest.approx(nuc, rel=1e-8)
    assert not np.isclose(np.trace(root), nuc, rtol=1e-8) or np.iscomplexobj(root)


def test_newton_schulz_tolerance():
    xa, xb = _gauss(400, 32, 7), _gauss(350, 32, 8, 0.2)
    (ma, ca), (mb, cb) = _stats(xa), _stats(xb)
    exact = frechet_distance(ma, ca, mb, cb)
    ns = frechet_distance(ma, ca, mb, cb, sqrt="newton_schulz")
    assert ns == pytest.approx(exact, rel=1e-7)
    root, iters = newton_schulz_sqrt(torch.tensor(ca @ cb))
    assert 1 < iters < 100
    torch.testing.assert_close(root @ root, torch.tensor(ca @ cb), rtol=1e-6, atol=1e-8)


def test_newton_schulz_is_differentiable():
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64, requires_grad=True)
    root, _ = newton_schulz_sqrt(a)
    torch.trace(root).backward()
    # d tr(sqrt(A)) / dA = 0.5 A^{-1/2} for symmetric A
    w, v = np.linalg.eigh(a.detach().numpy())
    expect = 0.5 * (v / np.sqrt(w)) @ v.T
    np.testing.assert_allclose(a.grad.numpy(), expect, rtol=1e-6)


def test_identical_distributions_and_scaling():
    x, y = _gauss(500, 10, 9), _gauss(400, 10, 10, 1.0)
    (m, c) = _stats(x)
    assert abs(frechet_distance(m, c, m, c)) < 1e-9
    fd = frechet_distance_tokens(x, y)
    assert frechet_distance_tokens(3 * x, 3 * y) == pytest.approx(9 * fd, rel=1e-10)
    assert frechet_distance(torch.tensor(m), torch.tensor(c), m, c) == pytest.approx(0, abs=1e-9)


def test_bad_inputs():
    m, c = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0, 0]), c, m, c)
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(m, np.eye(4), m, c)
    with pytest.raises(ValueError, match="means"):
        frechet_distance(np.zeros(4), c, m, c)
    with pytest.raises(ValueError, match="unknown trace-sqrt backend"):
        frechet_distance(m, c, m, c, sqrt="magic")
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance_tokens(np.ones((1, 3)), np.ones((5, 3)))
    assert set(SQRT_BACKENDS) == {"exact", "newton_schulz", "scipy", "official"}


@pytest.mark.parametrize(("d", "n"), [(64, 10), (512, 50)])
def test_exact_is_accurate_for_nearly_identical_rank_deficient_sets(d, n):
    # FD is tiny next to the traces here: sqrtm / eigvals routes lose it (they go negative at
    # d=512: about -5e-5 against the true +5e-4), the exact route must not.
    rng = np.random.default_rng(1)
    xa = rng.normal(size=(n, d)) * 3
    xb = xa + rng.normal(size=(n, d)) * 1e-3
    a, b = xa - xa.mean(0), xb - xb.mean(0)
    nuc = np.linalg.svd(a @ b.T, compute_uv=False).sum() / (n - 1)
    (ma, ca), (mb, cb) = _stats(xa), _stats(xb)
    ref = ((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * nuc
    got = frechet_distance(ma, ca, mb, cb)
    assert ref > 0 and got > 0
    assert got == pytest.approx(ref, rel=1e-6)
