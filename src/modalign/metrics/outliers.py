"""The 3-sigma norm outlier rule of MIR, as pure functions on token norms.

A token is an outlier of its layer and modality when | ||f|| - median(||f||) | > k * std(||f||)
(k = 3). Conventions (those of torch, which the official code uses): the median of an even count
is the lower of the two middle values, std is the unbiased (n - 1) estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modalign.errors import MetricError

__all__ = ["OUTLIER_MODES", "NormBounds", "norm_bounds"]

OUTLIER_MODES = ("drop", "median", "none")


@dataclass(frozen=True)
class NormBounds:
    """Median and std of a token set's norms; decides which norms are outliers.

    Args:
        median: the (lower) median norm.
        std: the unbiased std of the norms.
        k: outliers lie more than k std from the median.

    >>> b = NormBounds(median=1.0, std=0.1)
    >>> b.is_outlier(torch.tensor([1.2, 1.31, 0.6])).tolist()
    [False, True, True]
    """

    median: float
    std: float
    k: float = 3.0

    def is_outlier(self, norms: torch.Tensor) -> torch.Tensor:
        """Bool mask of outlier norms (strict inequality, as in the paper's rule)."""
        return (norms.to(torch.float64) - self.median).abs() > self.k * self.std

    def is_high(self, norms: torch.Tensor) -> torch.Tensor:
        return self.is_outlier(norms) & (norms.to(torch.float64) > self.median)

    def is_low(self, norms: torch.Tensor) -> torch.Tensor:
        return self.is_outlier(norms) & (norms.to(torch.float64) < self.median)


def norm_bounds(norms: torch.Tensor, k: float = 3.0) -> NormBounds:
    """Bounds of the k-sigma rule from all token norms of one layer and modality.

    Args:
        norms: every token norm (n,).
        k: the rule's k.

    Returns:
        `NormBounds` with torch's conventions: lower median, unbiased std.

    >>> norm_bounds(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    NormBounds(median=2.0, std=1.2909944487358056, k=3.0)
    """
    if norms.numel() == 0:
        raise MetricError("no token norms to compute outlier bounds from")
    norms = norms.to(torch.float64)
    std = float(norms.std()) if norms.numel() > 1 else 0.0
    return NormBounds(median=float(norms.median()), std=std, k=k)
