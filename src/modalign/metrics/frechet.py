"""Fréchet distance between Gaussians and the trace-square-root backends it needs.

FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).
S_a S_b is not symmetric, but its eigenvalues are those of the symmetric PSD matrix
L^T S_a L for any factor S_b = L L^T, so the exact trace is a sum of square roots of
symmetric eigenvalues (clamped at 0), computed in float64. Backends:
- exact: Cholesky factor (eigen-factor when singular) + symmetric eigenvalues; the default.
- newton_schulz: coupled, normalized Newton-Schulz iteration on S_a S_b (matmuls only).
- scipy: scipy.linalg.sqrtm(S_a @ S_b), pytorch-fid's method, the slow reference.
- official: the official MIR code's "fast" iteration, which returns S_a S_b itself; kept only to
  reproduce published numbers. It is not a Fréchet distance.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from modalign.errors import MetricError
from modalign.registry import Registry

__all__ = [
    "SQRT_BACKENDS",
    "frechet_distance",
    "frechet_distance_tokens",
    "trace_sqrt_product",
    "trace_sqrt_product_tokens",
]

TraceSqrt = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# name -> tr((A B)^{1/2}) of two covariances; an unknown name is a ConfigError listing the choices.
SQRT_BACKENDS: Registry[TraceSqrt] = Registry("trace-sqrt backend")


def _as_tensor(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not torch.isfinite(t).all():
        raise MetricError(f"{name} contains NaN or inf")
    return t.to(torch.float64)


def _psd_factor(cov: torch.Tensor) -> torch.Tensor:
    """A factor F with cov = F F^T: Cholesky when positive definite, else pivoted Cholesky.

    The pivoted (rank-revealing) Cholesky of a rank-r PSD matrix returns a (d, r) factor in
    O(d^2 r); it stops at LAPACK's default tolerance (d * eps * max diag), i.e. it drops
    rounding noise only. (A full eigendecomposition of a rank-deficient covariance works too,
    but LAPACK's syevd is pathologically slow on the huge zero-eigenvalue cluster.)
    """
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) == 0:
        return chol
    from scipy.linalg import lapack

    packed, piv, rank, info = lapack.dpstrf(cov.cpu().numpy(), lower=1, tol=-1)
    if info < 0:
        raise MetricError(f"pivoted Cholesky failed (LAPACK info {info})")
    factor = np.zeros((cov.shape[0], rank))
    factor[piv - 1, :] = np.tril(packed)[:, :rank]  # undo the pivoting: cov = F F^T
    return torch.from_numpy(factor).to(cov.device)


def _drop_null(w: torch.Tensor) -> torch.Tensor:
    """Zero the eigenvalues that are rounding noise (below d * eps * max, as pinv's rcond)."""
    tol = w.shape[0] * torch.finfo(w.dtype).eps * w.abs().max()
    return torch.where(w > tol, w, torch.zeros_like(w))


@SQRT_BACKENDS.register("exact")
def _trace_sqrt_exact(cov_a: torch.Tensor, cov_b: torch.Tensor) -> torch.Tensor:
    """tr((S_a S_b)^{1/2}) = sum sqrt(eig(L^T S_a L)), S_b = L L^T, float64."""
    a, b = cov_a.to(torch.float64), cov_b.to(torch.float64)
    factor = _psd_factor(b)
    m = factor.T @ (a @ factor)  # (r, r) symmetric PSD, its spectrum = S_a S_b's non-zero part
    m = (m + m.T) * 0.5
    return _drop_null(torch.linalg.eigvalsh(m)).sqrt().sum()


def newton_schulz_sqrt(
    a: torch.Tensor, *, max_iter: int = 100, tol: float = 1e-12
) -> tuple[torch.Tensor, int]:
    """Coupled Newton-Schulz square root of a matrix with non-negative real spectrum.

    Normalized by the Frobenius norm so the iteration converges; differentiable (matmuls only).

    Args:
        a: square matrix (d, d) whose eigenvalues are real and >= 0 (e.g. S_a S_b).
        max_iter: iteration cap.
        tol: stop when the trace of the iterate changes by less than this (relative).

    Returns:
        (sqrt(a), iterations used).

    >>> root, iters = newton_schulz_sqrt(torch.diag(torch.tensor([4.0, 9.0], dtype=torch.float64)))
    >>> [round(v, 6) for v in root.diagonal().tolist()]
    [2.0, 3.0]
    """
    d = a.shape[0]
    norm = torch.linalg.matrix_norm(a)
    if float(norm.detach()) == 0.0:
        return torch.zeros_like(a), 0
    eye = torch.eye(d, dtype=a.dtype, device=a.device)
    y, z = a / norm, eye.clone()
    prev = torch.trace(y)
    for it in range(1, max_iter + 1):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
        cur = torch.trace(y)
        if abs(float((cur - prev).detach())) <= tol * abs(float(cur.detach())):
            return y * norm.sqrt(), it
        prev = cur
    return y * norm.sqrt(), max_iter


@SQRT_BACKENDS.register("newton_schulz")
def _trace_sqrt_newton_schulz(cov_a: torch.Tensor, cov_b: torch.Tensor) -> torch.Tensor:
    root, _ = newton_schulz_sqrt(cov_a @ cov_b)
    return torch.trace(root)


@SQRT_BACKENDS.register("scipy")
def _trace_sqrt_scipy(cov_a: torch.Tensor, cov_b: torch.Tensor) -> torch.Tensor:
    """scipy.linalg.sqrtm of the product (pytorch-fid); imaginary parts are reported."""
    from scipy import linalg

    prod = (cov_a.to(torch.float64) @ cov_b.to(torch.float64)).cpu().numpy()
    root = linalg.sqrtm(prod)
    tr = np.trace(root)
    if np.iscomplexobj(root) and abs(tr.imag) > 1e-6 * max(abs(tr.real), 1e-30):
        warnings.warn(
            f"scipy sqrtm returned a complex trace ({tr:.6g}); using its real part",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.tensor(float(np.real(tr)), dtype=torch.float64)


@SQRT_BACKENDS.register("official")
def _trace_sqrt_official(cov_a: torch.Tensor, cov_b: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """The official code's iteration: Y0 = A, Z0 = I, Y <- (Y + Z^-1 A)/2, Z <- (Z + Y^-1 A)/2.

    Y = A is a fixed point, so this returns tr(S_a S_b) when A is well conditioned; like the
    official float32 code, it drifts from A when A is ill conditioned (the fixed point is
    unstable under rounding), so its numbers then depend on rounding, as the original's did.
    """
    a = (cov_a.to(torch.float32) @ cov_b.to(torch.float32)).to(cov_a.device)
    y, z = a.clone(), torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    try:
        for _ in range(iters):
            y = 0.5 * (y + torch.linalg.inv(z) @ a)
            z = 0.5 * (z + torch.linalg.inv(y) @ a)
    except torch.linalg.LinAlgError:
        y = a  # singular product: the official loop would fail; its fixed point is A itself
    return torch.trace(y).to(torch.float64)


def _check_pair(mu_a, cov_a, mu_b, cov_b):
    mu_a, mu_b = _as_tensor(mu_a, "mu_a"), _as_tensor(mu_b, "mu_b")
    cov_a, cov_b = _as_tensor(cov_a, "cov_a"), _as_tensor(cov_b, "cov_b")
    d = mu_a.shape[-1]
    if mu_b.shape != (d,) or mu_a.shape != (d,):
        raise MetricError(
            f"means must be vectors of one length, got {tuple(mu_a.shape)} and {tuple(mu_b.shape)}"
        )
    if cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise MetricError(
            f"covariances must be ({d}, {d}), got {tuple(cov_a.shape)} and {tuple(cov_b.shape)}"
        )
    return mu_a, cov_a, mu_b.to(mu_a.device), cov_b.to(cov_a.device)


def trace_sqrt_product(cov_a, cov_b, *, sqrt: str = "exact") -> float:
    """tr((S_a S_b)^{1/2}) with the chosen backend.

    Args:
        cov_a, cov_b: covariances (d, d), tensors or arrays.
        sqrt: a name in `SQRT_BACKENDS` (exact, newton_schulz, scipy, official).

    Returns:
        The trace, as a float.

    >>> a = torch.diag(torch.tensor([1.0, 4.0]))
    >>> trace_sqrt_product(a, torch.diag(torch.tensor([4.0, 1.0])))
    4.0
    """
    a, b = _as_tensor(cov_a, "cov_a"), _as_tensor(cov_b, "cov_b")
    return float(SQRT_BACKENDS[sqrt](a, b.to(a.device)))


def frechet_distance(mu_a, cov_a, mu_b, cov_b, *, sqrt: str = "exact") -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b); lower is better (closer).

    FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).

    Args:
        mu_a, mu_b: means (d,); cov_a, cov_b: covariances (d, d); tensors or arrays.
        sqrt: the trace-square-root backend (`SQRT_BACKENDS`); `official` reproduces the
            official MIR code (tr(S_a S_b) in place of the root: not a Fréchet distance).

    Returns:
        The distance, as a float.

    >>> eye = torch.eye(2)
    >>> frechet_distance(torch.zeros(2), eye, torch.tensor([3.0, 4.0]), 4 * eye)
    27.0
    """
    backend = SQRT_BACKENDS[sqrt]
    if sqrt == "official":
        warnings.warn(
            "sqrt='official' reproduces the official MIR code, which uses tr(S_a S_b) in place of "
            "tr((S_a S_b)^1/2): the value is not a Fréchet distance",
            UserWarning,
            stacklevel=2,
        )
    mu_a, cov_a, mu_b, cov_b = _check_pair(mu_a, cov_a, mu_b, cov_b)
    diff = mu_a - mu_b
    tr_sqrt = backend(cov_a, cov_b)
    return float(diff @ diff + torch.trace(cov_a) + torch.trace(cov_b) - 2.0 * tr_sqrt)


def trace_sqrt_product_tokens(x_a: torch.Tensor, x_b: torch.Tensor) -> float:
    """Exact tr((S_a S_b)^{1/2}) from the tokens (n_a, d), (n_b, d): the low-rank route.

    Equals the nuclear norm of Xa_c Xb_c^T / sqrt((n_a - 1)(n_b - 1)) (centered tokens); costs
    O(n_a n_b d) instead of O(d^3), so it wins when token counts are below d.

    Args:
        x_a, x_b: token sets (n_a, d) and (n_b, d), at least 2 tokens each.

    Returns:
        The trace, as a float.

    >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    >>> round(trace_sqrt_product_tokens(x, x), 6) == round(trace_sqrt_product(torch.cov(x.T),
    ...     torch.cov(x.T)), 6)
    True
    """
    a = x_a.to(torch.float64)
    b = x_b.to(a.device, torch.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise MetricError("each token set needs at least 2 tokens")
    a, b = a - a.mean(0), b - b.mean(0)
    cross = a @ b.T  # (n_a, n_b)
    gram = cross @ cross.T if cross.shape[0] <= cross.shape[1] else cross.T @ cross
    root_sum = _drop_null(torch.linalg.eigvalsh((gram + gram.T) * 0.5)).sqrt().sum()
    return float(root_sum) / float(np.sqrt((a.shape[0] - 1) * (b.shape[0] - 1)))


def frechet_distance_tokens(x_a, x_b, *, sqrt: str = "exact") -> float:
    """Fréchet distance between the Gaussians fitted to two token sets; lower is better.

    With sqrt='exact' and fewer tokens than dimensions, uses the low-rank route.

    Args:
        x_a, x_b: token sets (n_a, d) and (n_b, d), tensors or arrays, at least 2 tokens each.
        sqrt: the trace-square-root backend (`SQRT_BACKENDS`).

    Returns:
        FD between N(mean, unbiased covariance) of each set, as a float.

    >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    >>> frechet_distance_tokens(x, x + 1.0)
    2.0
    """
    a, b = _as_tensor(x_a, "x_a"), _as_tensor(x_b, "x_b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise MetricError(
            f"token sets must be (n, d) with one d, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise MetricError("each token set needs at least 2 tokens for a covariance")
    if sqrt == "exact" and min(a.shape[0], b.shape[0]) < a.shape[1]:
        diff = a.mean(0) - b.mean(0)
        tr_a = float(((a - a.mean(0)) ** 2).sum()) / (a.shape[0] - 1)
        tr_b = float(((b - b.mean(0)) ** 2).sum()) / (b.shape[0] - 1)
        return float(diff @ diff) + tr_a + tr_b - 2.0 * trace_sqrt_product_tokens(a, b)
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))
    return frechet_distance(a.mean(0), cov_a, b.mean(0), cov_b, sqrt=sqrt)
