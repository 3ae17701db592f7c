"""Streaming first and second moments of a token set, in float64, mergeable and all-reducible.

State per token set: count n, mean mu (d,) and centered scatter M2 = sum (x - mu)(x - mu)^T
(d, d). This is the count / sum / sum-of-outer-products triple in its numerically stable form
(sum = n mu, sum x x^T = M2 + n mu mu^T): merging uses Chan et al.'s exact pairwise formula,
so large means (LLM hidden states have a few huge dimensions) never cancel catastrophically.
Memory is O(d^2), independent of the number of tokens fed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modalign.errors import MetricError

__all__ = ["Moments", "merge_moments", "moments_from_tokens", "subtract_moments"]


@dataclass
class Moments:
    """Count, mean and centered scatter of a token set (float64).

    Args:
        n: number of tokens.
        mean: their mean (d,), float64.
        m2: sum of centered outer products (d, d), float64.

    >>> m = Moments.empty(2).update(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    >>> m.n, m.mean.tolist(), m.covariance().tolist()
    (2, [1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """

    n: int
    mean: torch.Tensor  # (d,) float64
    m2: torch.Tensor  # (d, d) float64, sum of centered outer products

    @classmethod
    def empty(cls, dim: int, device: torch.device | str | None = None) -> Moments:
        z = torch.zeros(dim, dtype=torch.float64, device=device)
        return cls(0, z, torch.zeros(dim, dim, dtype=torch.float64, device=device))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def sum(self) -> torch.Tensor:
        """Sum of all tokens, (d,)."""
        return self.mean * self.n

    def covariance(self) -> torch.Tensor:
        """Unbiased covariance (divides by n - 1); needs at least two tokens."""
        if self.n < 2:
            raise MetricError(f"covariance needs at least 2 tokens, got {self.n}")
        return self.m2 / (self.n - 1)

    def update(self, x: torch.Tensor) -> Moments:
        """Add the rows of x (n, d) in place; returns self."""
        merged = merge_moments(self, moments_from_tokens(x))
        self.n, self.mean, self.m2 = merged.n, merged.mean, merged.m2
        return self

    def add_copies(self, x: torch.Tensor, count: int) -> Moments:
        """Add `count` copies of a single token x (d,) in place (used by median replacement)."""
        if count <= 0:
            return self
        x = x.to(torch.float64)
        block = Moments(count, x.clone(), torch.zeros_like(self.m2))
        merged = merge_moments(self, block)
        self.n, self.mean, self.m2 = merged.n, merged.mean, merged.m2
        return self

    def to(self, device: torch.device | str) -> Moments:
        return Moments(self.n, self.mean.to(device), self.m2.to(device))


def moments_from_tokens(x: torch.Tensor) -> Moments:
    """Moments of the rows of x (n, d), computed in float64 on x's device.

    Args:
        x: tokens (n, d), any float dtype.

    Returns:
        Their `Moments` (empty when n = 0).

    >>> m = moments_from_tokens(torch.tensor([[1.0], [3.0]]))
    >>> m.n, m.mean.item(), m.m2.item()
    (2, 2.0, 2.0)
    """
    if x.ndim != 2:
        raise MetricError(f"tokens must be a 2-D (n, d) tensor, got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    n = x.shape[0]
    if n == 0:
        return Moments.empty(x.shape[1], x.device)
    mean = x.mean(dim=0)  # (d,)
    xc = x - mean  # (n, d)
    return Moments(n, mean, xc.T @ xc)


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Exact combination of two disjoint token sets (Chan et al. 1979).

    Args:
        a, b: moments of two disjoint token sets of one dimension.

    Returns:
        The moments of their union (new tensors; a and b are unchanged).

    >>> x = torch.tensor([[1.0], [2.0], [6.0]])
    >>> both = merge_moments(moments_from_tokens(x[:1]), moments_from_tokens(x[1:]))
    >>> both.n, both.mean.item(), both.m2.item()
    (3, 3.0, 14.0)
    """
    if a.dim != b.dim:
        raise ValueError(f"cannot merge moments of dimension {a.dim} and {b.dim}")
    if b.n == 0:
        return Moments(a.n, a.mean.clone(), a.m2.clone())
    if a.n == 0:
        return Moments(b.n, b.mean.clone(), b.m2.clone())
    b_mean, b_m2 = b.mean.to(a.mean.device), b.m2.to(a.m2.device)
    n = a.n + b.n
    delta = b_mean - a.mean  # (d,)
    mean = a.mean + delta * (b.n / n)
    m2 = a.m2 + b_m2 + torch.outer(delta, delta) * (a.n * b.n / n)
    return Moments(n, mean, m2)


def subtract_moments(a: Moments, b: Moments) -> Moments:
    """Moments of set a with its subset b removed: the exact inverse of `merge_moments`.

    Args:
        a: moments of a token set.
        b: moments of a subset of it (the tokens to remove).

    Returns:
        The moments of the remaining tokens.

    >>> x = torch.tensor([[1.0], [2.0], [6.0]])
    >>> rest = subtract_moments(moments_from_tokens(x), moments_from_tokens(x[2:]))
    >>> rest.n, rest.mean.item(), rest.m2.item()
    (2, 1.5, 0.5)
    """
    rest = a.n - b.n
    if rest < 0:
        raise ValueError(f"cannot remove {b.n} tokens from a set of {a.n}")
    if b.n == 0:
        return Moments(a.n, a.mean.clone(), a.m2.clone())
    if rest == 0:
        return Moments.empty(a.dim, a.mean.device)
    b_mean, b_m2 = b.mean.to(a.mean.device), b.m2.to(a.m2.device)
    mean = (a.mean * a.n - b_mean * b.n) / rest
    delta = b_mean - mean  # (d,)
    m2 = a.m2 - b_m2 - torch.outer(delta, delta) * (rest * b.n / a.n)
    return Moments(rest, mean, m2)
