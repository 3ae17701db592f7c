"""Pure MIR math on tensors: moments, Fréchet distance backends, MIR, baselines. No models, no I/O
beyond the result's JSON."""

from modalign.metrics.accumulator import MIRAccumulator, compute_mir
from modalign.metrics.baselines import (
    baseline_report,
    centroid_gap,
    kid,
    layerwise,
    mmd2_unbiased,
    polynomial_kernel,
)
from modalign.metrics.frechet import (
    frechet_distance,
    frechet_distance_tokens,
    trace_sqrt_product,
    trace_sqrt_product_tokens,
)
from modalign.metrics.median import MEDIAN_MODES, MedianSearch
from modalign.metrics.moments import Moments, merge_moments, moments_from_tokens, subtract_moments
from modalign.metrics.outliers import OUTLIER_MODES, NormBounds, norm_bounds
from modalign.metrics.result import MIRResult, result_schema
from modalign.metrics.sqrt_backends import (
    SQRT_BACKENDS,
    SqrtBackend,
    newton_schulz_sqrt,
    sqrt_backend,
)

__all__ = [
    "MEDIAN_MODES",
    "OUTLIER_MODES",
    "SQRT_BACKENDS",
    "MIRAccumulator",
    "MIRResult",
    "MedianSearch",
    "Moments",
    "NormBounds",
    "SqrtBackend",
    "baseline_report",
    "centroid_gap",
    "compute_mir",
    "frechet_distance",
    "frechet_distance_tokens",
    "kid",
    "layerwise",
    "merge_moments",
    "mmd2_unbiased",
    "moments_from_tokens",
    "newton_schulz_sqrt",
    "norm_bounds",
    "polynomial_kernel",
    "result_schema",
    "sqrt_backend",
    "subtract_moments",
    "trace_sqrt_product",
    "trace_sqrt_product_tokens",
]
