"""MIR from accumulated token-set states: text-centric scaling, per-layer FD, log10 of the sum.

Pure functions on `Moments`; the streaming bookkeeping lives in `MIRAccumulator`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from modalign.errors import MetricError
from modalign.metrics.frechet import frechet_distance
from modalign.metrics.moments import Moments
from modalign.metrics.sqrt_backends import SqrtBackend, sqrt_backend

__all__ = ["LayerGap", "layer_gap", "mir_from_per_layer"]


@dataclass(frozen=True)
class LayerGap:
    """Distances between the scaled vision and text token distributions of one layer."""

    fd: float
    centroid: float
    cosine: float


def layer_gap(
    vision: Moments,
    text: Moments,
    alpha: float,
    *,
    sqrt: str | SqrtBackend = "exact",
    layer: int | str = "?",
) -> LayerGap:
    """FD between alpha * vision and alpha * text tokens (both sets scaled by the same alpha)."""
    for name, m in (("vision", vision), ("text", text)):
        if m.n < 2:
            raise MetricError(
                f"layer {layer}: {m.n} {name} token(s) after outlier handling; "
                "a covariance needs at least 2"
            )
    mu_v, mu_t = vision.mean * alpha, text.mean * alpha
    cov_v, cov_t = vision.covariance() * alpha**2, text.covariance() * alpha**2
    fd = frechet_distance(mu_v, cov_v, mu_t, cov_t.to(cov_v.device), sqrt=sqrt)
    if not math.isfinite(fd):
        raise MetricError(f"layer {layer}: Fréchet distance is not finite ({fd})")
    mu_t = mu_t.to(mu_v.device)
    cos = float(torch.nn.functional.cosine_similarity(mu_v, mu_t, dim=0))
    return LayerGap(fd=fd, centroid=float((mu_v - mu_t).norm()), cosine=1.0 - cos)


def mir_from_per_layer(per_layer: list[float], *, sqrt: str | SqrtBackend = "exact") -> float:
    """MIR = log10 of the summed per-layer distances; lower is better aligned.

    A non-positive or non-finite sum is an error (MIR is undefined there).

    Args:
        per_layer: the per-layer Fréchet distances.
        sqrt: the backend they came from, or its name (its properties decide whether a negative
            per-layer value deserves a warning and what the error about a negative sum says).

    Returns:
        log10(sum(per_layer)).

    >>> mir_from_per_layer([40.0, 60.0])
    2.0
    """
    backend = sqrt_backend(sqrt)
    if not per_layer:
        raise MetricError("no layers to compute MIR from")
    total = math.fsum(per_layer)
    if not math.isfinite(total) or total <= 0:
        hint = f" ({backend.negative_sum})" if backend.negative_sum and total <= 0 else ""
        raise MetricError(f"sum of per-layer distances is {total!r}: MIR is undefined{hint}")
    if not backend.negative_layers and min(per_layer) < -1e-6 * total:
        warnings.warn(
            f"a per-layer FD is negative ({min(per_layer):.3g})", RuntimeWarning, stacklevel=2
        )
    return math.log10(total)
