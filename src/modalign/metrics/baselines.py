"""Baseline modality-gap measures from the MIR supplementary (Table 1): MMD, KID, centroid gap.

MMD and KID use the polynomial kernel k(x, y) = (gamma <x, y> + coef)^degree with torchmetrics'
defaults (degree 3, gamma = 1/d, coef 1). MMD^2 is the unbiased estimator over all tokens,
computed in row blocks so memory stays O(block * n); KID averages it over random equal-size
subsets (torchmetrics' `KernelInceptionDistance`: mean and population std over subsets).
`layerwise` sums or averages any of them over layers after text-centric scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from modalign.errors import ConfigError, MetricError

__all__ = [
    "baseline_report",
    "centroid_gap",
    "kid",
    "layerwise",
    "mmd2_unbiased",
    "polynomial_kernel",
]


def polynomial_kernel(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> torch.Tensor:
    """The polynomial kernel matrix (gamma x y^T + coef)^degree, torchmetrics' KID kernel.

    Args:
        x: tokens (n, d); y: tokens (m, d).
        degree, gamma, coef: the kernel's parameters; gamma defaults to 1 / d.

    Returns:
        The kernel matrix (n, m).

    >>> polynomial_kernel(torch.ones(1, 2), torch.ones(1, 2))
    tensor([[8.]])
    """
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef) ** degree


def _check_sets(x: torch.Tensor, y: torch.Tensor, min_n: int = 2) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise MetricError(
            f"token sets must be (n, d) with one d, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] < min_n or y.shape[0] < min_n:
        raise MetricError(
            f"each token set needs at least {min_n} tokens, got {x.shape[0]} and {y.shape[0]}"
        )
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise MetricError("token sets contain NaN or inf")


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, block: int, same: bool, **kw) -> torch.Tensor:
    """Sum of k(a_i, b_j) over all pairs (over i != j when a is b), blockwise."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[0], block):
        k = polynomial_kernel(a[s : s + block], b, **kw)  # (blk, n_b)
        total += k.sum(dtype=torch.float64)
        if same:
            rows = torch.arange(k.shape[0], device=a.device)
            total -= k[rows, rows + s].sum(dtype=torch.float64)
    return total


def mmd2_unbiased(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    block: int = 2048,
    dtype: torch.dtype = torch.float64,
    **kernel,
) -> float:
    """Unbiased MMD^2 between token sets with the polynomial kernel; lower is better (closer).

    Args:
        x: tokens (m, d); y: tokens (n, d); at least 2 each.
        block: rows per kernel block (memory O(block * n)).
        dtype: computation dtype.
        **kernel: `polynomial_kernel` parameters (degree, gamma, coef).

    Returns:
        MMD^2 (unbiased: can be slightly negative for identical distributions).

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
    >>> round(mmd2_unbiased(x, y), 3), round(mmd2_unbiased(x, y + 2.0), 1)  # same, shifted
    (0.029, 206.0)
    """
    _check_sets(x, y)
    x, y = x.to(dtype), y.to(x.device, dtype)
    m, n = x.shape[0], y.shape[0]
    kxx = _kernel_sum(x, x, block, True, **kernel) / (m * (m - 1))
    kyy = _kernel_sum(y, y, block, True, **kernel) / (n * (n - 1))
    kxy = _kernel_sum(x, y, block, False, **kernel) / (m * n)
    return float(kxx + kyy - 2 * kxy)


def kid(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    **kernel,
) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of unbiased MMD^2 over random subsets; lower is
    better (closer).

    Args:
        x: tokens (n_x, d); y: tokens (n_y, d).
        subsets: number of random subset pairs; subset_size: tokens per subset.
        seed: seed of the subsets.
        **kernel: `polynomial_kernel` parameters.

    Returns:
        (mean, population std) of MMD^2 over the subsets, as torchmetrics reports them.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g) + 1.0
    >>> mean, std = kid(x, y, subsets=10, subset_size=20)
    >>> mean > 0, std >= 0
    (True, True)
    """
    _check_sets(x, y)
    if subset_size < 2 or subset_size > min(x.shape[0], y.shape[0]):
        raise MetricError(
            f"subset_size={subset_size} must be in [2, min(n_x, n_y)={min(x.shape[0], y.shape[0])}]"
        )
    gen = torch.Generator().manual_seed(seed)
    draws = [
        (torch.randperm(x.shape[0], generator=gen)[:subset_size].to(x.device),
         torch.randperm(y.shape[0], generator=gen)[:subset_size].to(y.device))
        for _ in range(subsets)
    ]  # fmt: skip
    if max(x.shape[0], y.shape[0]) <= GRAM_LIMIT:
        scores = _subset_mmds(x, y, draws, **kernel)
    else:  # too many tokens for whole kernel matrices: one MMD per subset
        scores = [mmd2_unbiased(x[ix], y[iy], **kernel) for ix, iy in draws]
    t = torch.tensor(scores, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False))


GRAM_LIMIT = 8192  # tokens per set up to which KID computes each kernel matrix once (512 MiB)


def _subset_mmds(
    x: torch.Tensor, y: torch.Tensor, draws: list[tuple[torch.Tensor, torch.Tensor]], **kernel
) -> list[float]:
    """Unbiased MMD^2 of every (ix, iy) subset pair from the three kernel matrices, computed
    once in float64: the numbers of `mmd2_unbiased` per subset, without recomputing kernels."""
    x, y = x.to(torch.float64), y.to(x.device, torch.float64)
    kxx, kyy = polynomial_kernel(x, x, **kernel), polynomial_kernel(y, y, **kernel)  # (n, n)
    kxy = polynomial_kernel(x, y, **kernel)  # (n_x, n_y)
    sx = torch.zeros(len(draws), x.shape[0], dtype=torch.float64, device=x.device)  # (R, n_x)
    sy = torch.zeros(len(draws), y.shape[0], dtype=torch.float64, device=x.device)  # (R, n_y)
    for r, (ix, iy) in enumerate(draws):  # subset indicators: s^T K s sums a subset's block
        sx[r, ix], sy[r, iy] = 1.0, 1.0
    sxx = ((sx @ kxx) * sx).sum(1) - sx @ kxx.diagonal()  # (R,) sums over i != j
    syy = ((sy @ kyy) * sy).sum(1) - sy @ kyy.diagonal()
    sxy = ((sx @ kxy) * sy).sum(1)
    m = draws[0][0].numel()
    return ((sxx + syy) / (m * (m - 1)) - 2 * sxy / (m * m)).tolist()


def centroid_gap(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The 'modality gap' of the centroids; lower is better (closer) for both numbers.

    Args:
        x: tokens (n, d); y: tokens (m, d); at least 1 each.

    Returns:
        (||mean x - mean y||, 1 - cos(mean x, mean y)).

    >>> centroid_gap(torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]]))
    (5.0, 1.0)
    """
    _check_sets(x, y, min_n=1)
    mx, my = x.to(torch.float64).mean(0), y.to(x.device, torch.float64).mean(0)
    cos = torch.nn.functional.cosine_similarity(mx, my, dim=0)
    return float((mx - my).norm()), float(1.0 - cos)


def layerwise(
    fn: Callable[[torch.Tensor, torch.Tensor], float],
    vision: Sequence[torch.Tensor],
    text: Sequence[torch.Tensor],
    *,
    reduce: str = "mean",
    text_centric: bool = True,
) -> tuple[float, list[float]]:
    """Apply a two-set measure at every layer (scaled by 1 / mean text norm) and reduce.

    For the distances here (MMD, KID, centroid gap) lower is better.

    Args:
        fn: the measure, fn(vision (n_v, d), text (n_t, d)) -> float.
        vision, text: per layer, the token sets.
        reduce: `mean` (the supplementary's "layer-wise accumulation" magnitudes) or `sum`
            (accumulates as MIR does).
        text_centric: scale both sets by 1 / mean text-token norm first, as MIR does.

    Returns:
        (reduced value, per-layer values).

    >>> v = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]])]
    >>> t = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    >>> layerwise(lambda a, b: centroid_gap(a, b)[0], v, t)
    (1.5, [1.0, 2.0])
    """
    if len(vision) != len(text) or not vision:
        raise MetricError(
            f"need the same non-zero number of layers, got {len(vision)} and {len(text)}"
        )
    if reduce not in ("mean", "sum"):
        raise ConfigError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    values = []
    for k, (v, t) in enumerate(zip(vision, text, strict=True)):
        alpha = 1.0
        if text_centric:
            mean_norm = float(t.to(torch.float64).norm(dim=1).mean())
            if mean_norm == 0:
                raise MetricError(f"layer {k}: text tokens have zero norm; cannot scale")
            alpha = 1.0 / mean_norm
        values.append(float(fn(v.to(torch.float64) * alpha, t.to(torch.float64) * alpha)))
    total = sum(values)
    return (total / len(values) if reduce == "mean" else total), values


def baseline_report(
    vision: Sequence[torch.Tensor],
    text: Sequence[torch.Tensor],
    *,
    max_tokens: int = 2048,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float | list[float]]:
    """The supplementary Table 1 baselines for per-layer token sets; lower is better for all.

    "Plain" values are taken at the first given layer (the LLM's input space when layer 0 is the
    embedding output), "layerwise" ones averaged over all layers after text-centric scaling.
    Each set is subsampled (seeded) to at most `max_tokens` tokens since MMD costs O(n^2 d).

    Args:
        vision, text: per layer, the token sets (n_v, d) and (n_t, d).
        max_tokens: subsample size per set.
        kid_subsets, kid_subset_size: KID's subsets (the size is capped by the set sizes).
        seed: seed of the subsampling and of KID.

    Returns:
        {"mmd", "mmd_layerwise", "kid", "kid_layerwise", "mmd_per_layer",
        "centroid_gap_raw", "cosine_gap", "tokens_per_set_max", "kid_subset_size"}.

    >>> g = torch.Generator().manual_seed(0)
    >>> vision = [torch.randn(30, 3, generator=g) + 1.0 for _ in range(2)]
    >>> text = [torch.randn(30, 3, generator=g) for _ in range(2)]
    >>> report = baseline_report(vision, text, kid_subsets=5, kid_subset_size=10)
    >>> report["kid_subset_size"], len(report["mmd_per_layer"])
    (10, 2)
    """
    gen = torch.Generator().manual_seed(seed)
    picks: dict[int, torch.Tensor] = {}  # same token positions at every layer

    def sub(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= max_tokens:
            return x
        if x.shape[0] not in picks:
            picks[x.shape[0]] = torch.randperm(x.shape[0], generator=gen)[:max_tokens]
        return x[picks[x.shape[0]].to(x.device)]

    vs = [sub(v) for v in vision]
    picks.clear()
    ts = [sub(t) for t in text]
    size = min(kid_subset_size, *(x.shape[0] for x in vs + ts))

    def kid_mean(a: torch.Tensor, b: torch.Tensor) -> float:
        return kid(a, b, subsets=kid_subsets, subset_size=size, seed=seed)[0]

    mmd_lw, mmd_layers = layerwise(mmd2_unbiased, vs, ts)
    kid_lw, kid_layers = layerwise(kid_mean, vs, ts)
    gaps = [centroid_gap(v, t) for v, t in zip(vs, ts, strict=True)]
    return {
        "mmd": mmd_layers[0],
        "mmd_layerwise": mmd_lw,
        "kid": kid_layers[0],  # the first layer, scaled as in the layer-wise mean
        "kid_layerwise": kid_lw,
        "mmd_per_layer": mmd_layers,
        "centroid_gap_raw": [g[0] for g in gaps],
        "cosine_gap": [g[1] for g in gaps],
        "tokens_per_set_max": max_tokens,
        "kid_subset_size": size,
    }
