"""Fréchet distance between Gaussians: FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).

The trace square root comes from a backend (`SQRT_BACKENDS`, in `modalign.metrics.sqrt_backends`):
exact by default, `official` only to reproduce published numbers (not a Fréchet distance). With
fewer tokens than dimensions, the exact trace is cheaper from the tokens (the low-rank route).
"""

from __future__ import annotations

import numpy as np
import torch

from modalign.errors import MetricError
from modalign.metrics.sqrt_backends import SQRT_BACKENDS, SqrtBackend, drop_null, sqrt_backend

__all__ = [
    "SQRT_BACKENDS",
    "frechet_distance",
    "frechet_distance_tokens",
    "trace_sqrt_product",
    "trace_sqrt_product_tokens",
]


def _as_tensor(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not torch.isfinite(t).all():
        raise MetricError(f"{name} contains NaN or inf")
    return t.to(torch.float64)


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


def trace_sqrt_product(cov_a, cov_b, *, sqrt: str | SqrtBackend = "exact") -> float:
    """tr((S_a S_b)^{1/2}) with the chosen backend.

    Args:
        cov_a, cov_b: covariances (d, d), tensors or arrays.
        sqrt: a backend or its name in `SQRT_BACKENDS` (exact, newton_schulz, scipy, official).

    Returns:
        The trace, as a float.

    >>> a = torch.diag(torch.tensor([1.0, 4.0]))
    >>> trace_sqrt_product(a, torch.diag(torch.tensor([4.0, 1.0])))
    4.0
    """
    a, b = _as_tensor(cov_a, "cov_a"), _as_tensor(cov_b, "cov_b")
    return float(sqrt_backend(sqrt)(a, b.to(a.device)))


def frechet_distance(mu_a, cov_a, mu_b, cov_b, *, sqrt: str | SqrtBackend = "exact") -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b); lower is better (closer).

    FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).

    Args:
        mu_a, mu_b: means (d,); cov_a, cov_b: covariances (d, d); tensors or arrays.
        sqrt: the trace-square-root backend or its name (`SQRT_BACKENDS`); `official`
            reproduces the official MIR code (tr(S_a S_b) in place of the root: not a Fréchet
            distance, and warned as such).

    Returns:
        The distance, as a float.

    >>> eye = torch.eye(2)
    >>> frechet_distance(torch.zeros(2), eye, torch.tensor([3.0, 4.0]), 4 * eye)
    27.0
    """
    backend = sqrt_backend(sqrt)
    backend.warn("the value is not a Fréchet distance", stacklevel=2)
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
    root_sum = drop_null(torch.linalg.eigvalsh((gram + gram.T) * 0.5)).sqrt().sum()
    return float(root_sum) / float(np.sqrt((a.shape[0] - 1) * (b.shape[0] - 1)))


def frechet_distance_tokens(x_a, x_b, *, sqrt: str | SqrtBackend = "exact") -> float:
    """Fréchet distance between the Gaussians fitted to two token sets; lower is better.

    With an exact backend and fewer tokens than dimensions, uses the low-rank route.

    Args:
        x_a, x_b: token sets (n_a, d) and (n_b, d), tensors or arrays, at least 2 tokens each.
        sqrt: the trace-square-root backend or its name (`SQRT_BACKENDS`).

    Returns:
        FD between N(mean, unbiased covariance) of each set, as a float.

    >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    >>> frechet_distance_tokens(x, x + 1.0)
    2.0
    """
    backend = sqrt_backend(sqrt)
    a, b = _as_tensor(x_a, "x_a"), _as_tensor(x_b, "x_b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise MetricError(
            f"token sets must be (n, d) with one d, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise MetricError("each token set needs at least 2 tokens for a covariance")
    if backend.exact and min(a.shape[0], b.shape[0]) < a.shape[1]:
        diff = a.mean(0) - b.mean(0)
        tr_a = float(((a - a.mean(0)) ** 2).sum()) / (a.shape[0] - 1)
        tr_b = float(((b - b.mean(0)) ** 2).sum()) / (b.shape[0] - 1)
        return float(diff @ diff) + tr_a + tr_b - 2.0 * trace_sqrt_product_tokens(a, b)
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))
    return frechet_distance(a.mean(0), cov_a, b.mean(0), cov_b, sqrt=backend)
