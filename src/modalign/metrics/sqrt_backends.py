"""The trace-square-root backends of the Fréchet distance, as objects that carry their properties.

A backend computes tr((S_a S_b)^{1/2}) of two covariances. S_a S_b is not symmetric, but its
eigenvalues are those of the symmetric PSD matrix L^T S_a L for any factor S_b = L L^T, so the
exact trace is a sum of square roots of symmetric eigenvalues (clamped at 0), in float64.

- exact: Cholesky factor (pivoted when singular) + symmetric eigenvalues; the default.
- newton_schulz: coupled, normalized Newton-Schulz iteration on S_a S_b (matmuls only).
- scipy: scipy.linalg.sqrtm(S_a @ S_b), pytorch-fid's method, the slow reference.
- official: the official MIR code's "fast" iteration, which returns S_a S_b itself; kept only to
  reproduce published numbers. It is not a Fréchet distance.

What a caller needs to know about a backend (is the result a Fréchet distance, can per-layer
values be negative, what to warn) is a field of its `SqrtBackend`, never a test of its name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from modalign.errors import MetricError
from modalign.registry import Registry

__all__ = ["SQRT_BACKENDS", "SqrtBackend", "newton_schulz_sqrt", "sqrt_backend"]

TraceSqrt = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SqrtBackend:
    """A trace-square-root backend: the function and what its numbers mean.

    Args:
        name: its name in `SQRT_BACKENDS` (and in `--sqrt`, and in recorded settings).
        trace_sqrt: tr((S_a S_b)^{1/2}) of two float64 covariances (d, d), as a 0-d tensor.
        frechet: whether the distances it gives are Fréchet distances (`official` is not).
        exact: exact up to float64 rounding, so the low-rank token route (the same number,
            cheaper when a set has fewer tokens than dimensions) may stand in for it.
        negative_layers: whether a negative per-layer value is legitimate (not a numerical
            failure worth a warning).
        caveat: what a user must be told when it is used (warned once per computation).
        negative_sum: why a non-positive sum of per-layer values can happen with it, for the
            error message (MIR is log10 of that sum).

    >>> b = sqrt_backend("official")
    >>> b.frechet, b.negative_layers, sqrt_backend("exact").exact
    (False, True, True)
    >>> float(b(torch.eye(2), 2 * torch.eye(2)))  # tr(S_a S_b), not tr((S_a S_b)^1/2)
    4.0
    """

    name: str
    trace_sqrt: TraceSqrt
    frechet: bool = True
    exact: bool = False
    negative_layers: bool = False
    caveat: str = ""
    negative_sum: str = ""

    def __call__(self, cov_a: torch.Tensor, cov_b: torch.Tensor) -> torch.Tensor:
        return self.trace_sqrt(cov_a, cov_b)

    def warn(self, what: str, stacklevel: int = 2) -> None:
        """Warn with the caveat, if any: `what` says which values are affected."""
        if self.caveat:
            warnings.warn(
                f"sqrt={self.name!r} {self.caveat}: {what}", UserWarning, stacklevel=stacklevel + 1
            )


# name -> SqrtBackend; an unknown name is a ConfigError listing the choices.
SQRT_BACKENDS: Registry[SqrtBackend] = Registry("trace-sqrt backend")


def sqrt_backend(sqrt: str | SqrtBackend) -> SqrtBackend:
    """The backend named `sqrt` (a backend passes through): resolve a setting once, up front.

    Args:
        sqrt: a name in `SQRT_BACKENDS` or a `SqrtBackend`.

    Returns:
        The `SqrtBackend`.

    >>> sqrt_backend("exact").name, sqrt_backend(sqrt_backend("scipy")).name
    ('exact', 'scipy')
    """
    return sqrt if isinstance(sqrt, SqrtBackend) else SQRT_BACKENDS[sqrt]


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


def drop_null(w: torch.Tensor) -> torch.Tensor:
    """Zero the eigenvalues that are rounding noise (below d * eps * max, as pinv's rcond)."""
    tol = w.shape[0] * torch.finfo(w.dtype).eps * w.abs().max()
    return torch.where(w > tol, w, torch.zeros_like(w))


def _trace_sqrt_exact(cov_a: torch.Tensor, cov_b: torch.Tensor) -> torch.Tensor:
    """tr((S_a S_b)^{1/2}) = sum sqrt(eig(L^T S_a L)), S_b = L L^T, float64."""
    a, b = cov_a.to(torch.float64), cov_b.to(torch.float64)
    factor = _psd_factor(b)
    m = factor.T @ (a @ factor)  # (r, r) symmetric PSD, its spectrum = S_a S_b's non-zero part
    m = (m + m.T) * 0.5
    return drop_null(torch.linalg.eigvalsh(m)).sqrt().sum()


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


def _trace_sqrt_newton_schulz(cov_a: torch.Tensor, cov_b: torch.Tensor) -> torch.Tensor:
    root, _ = newton_schulz_sqrt(cov_a @ cov_b)
    return torch.trace(root)


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


for _backend in (
    SqrtBackend("exact", _trace_sqrt_exact, exact=True),
    SqrtBackend("newton_schulz", _trace_sqrt_newton_schulz),
    SqrtBackend("scipy", _trace_sqrt_scipy),
    SqrtBackend(
        "official",
        _trace_sqrt_official,
        frechet=False,
        negative_layers=True,
        caveat="reproduces the official MIR code, which uses tr(S_a S_b) in place of "
        "tr((S_a S_b)^1/2)",
        negative_sum="sqrt='official' uses tr(S_v S_t) in place of the square root, which can "
        "make the sum negative; the official code's math.log(sum, 10) stops there with "
        "'ValueError: math domain error'",
    ),
):
    SQRT_BACKENDS.register(_backend.name)(_backend)
del _backend
