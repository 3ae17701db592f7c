"""What a per-layer modality gap is made of: token norms, the mean and covariance terms of the
Fréchet distance, and the distance under other scalings, to explain a change in MIR.

    terms = gap_terms(adapter, pairs)   # one dict per layer, plus the MIR they add up to

FD_k (text-centric, as MIR) = ||a mu_v - a mu_t||^2  (mean term)
                             + tr(a^2 S_v) + tr(a^2 S_t) - 2 tr((a^2 S_v a^2 S_t)^1/2)  (cov. term)
with a = 1 / mean text-token norm. Both scaled sets share `a`, so when vision tokens grow while
text tokens do not, FD grows with them even if their directions align better. The controls:
`fd_own_scaling` scales each modality by its own mean norm (shape of the distributions only),
`cosine_gap` is scale-free. Norms and the control use every token (MIR drops 3-sigma norm
outliers first). Tokens are held in memory: a diagnostic for probe-sized sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from modalign.data.pairs import Pair
from modalign.metrics.accumulator import compute_mir
from modalign.metrics.frechet import frechet_distance_tokens
from modalign.models.adapters.base import VLMAdapter


def collect_tokens(
    adapter: VLMAdapter, pairs: Sequence[Pair], *, template: str = "chat", batch_size: int = 16
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Per decoder layer, every vision and every passage token of the pairs (float64, CPU)."""
    layer_ids = adapter.layer_ids()
    vision: list[list[torch.Tensor]] = [[] for _ in layer_ids]
    text: list[list[torch.Tensor]] = [[] for _ in layer_ids]
    for start in range(0, len(pairs), batch_size):
        batch = adapter.prepare(list(pairs[start : start + batch_size]), template=template)
        v, t = adapter.forward(batch, layers=layer_ids).tokens()
        for k in range(len(layer_ids)):
            vision[k].append(v[k].double().cpu())  # (n_v, d)
            text[k].append(t[k].double().cpu())  # (n_t, d)
    return [torch.cat(x) for x in vision], [torch.cat(x) for x in text], layer_ids


def terms_of_tokens(
    vision: Sequence[torch.Tensor], text: Sequence[torch.Tensor], layer_ids: Sequence[int]
) -> dict[str, Any]:
    """The MIR of the token sets (outliers dropped, as `modalign mir`) and, per layer, its
    decomposition and the controls."""
    result = compute_mir(vision, text, layer_ids=layer_ids)
    layers = []
    for k, (v, t) in enumerate(zip(vision, text, strict=True)):
        v_norm, t_norm = float(v.norm(dim=1).mean()), float(t.norm(dim=1).mean())
        mean_term = result.centroid_gap[k] ** 2
        layers.append({
            "layer": layer_ids[k],
            "vision_norm": v_norm,
            "text_norm": t_norm,
            "norm_ratio": v_norm / t_norm,  # vision / text mean token norm
            "fd": result.per_layer[k],
            "mean_term": mean_term,
            "cov_term": result.per_layer[k] - mean_term,
            "cosine_gap": result.cosine_gap[k],
            "fd_own_scaling": frechet_distance_tokens(v / v_norm, t / t_norm),
        })  # fmt: skip
    own = math.log10(sum(x["fd_own_scaling"] for x in layers))
    return {"mir": result.mir, "mir_own_scaling": own, "layers": layers}


def gap_terms(
    adapter: VLMAdapter, pairs: Sequence[Pair], *, template: str = "chat", batch_size: int = 16
) -> dict[str, Any]:
    """`terms_of_tokens` on the adapter's tokens for `pairs` (model in eval mode, no grad)."""
    adapter.model.eval()
    return terms_of_tokens(
        *collect_tokens(adapter, pairs, template=template, batch_size=batch_size)
    )
