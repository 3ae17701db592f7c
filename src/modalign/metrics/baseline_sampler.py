"""The baselines in streaming form, for model runs: a seeded uniform sample of at most
`max_tokens` tokens per layer and modality, fed batch by batch beside MIR, then MMD / KID /
gaps on the samples (`baseline_report`). Memory is O(layers x max_tokens x d), whatever N.

KID is itself defined on random subsets (torchmetrics' default: 100 subsets of 1000), and the
quadratic MMD estimator is subsampled by `baseline_report` anyway, so a uniform sample of the
stream changes nothing but where the sample is drawn. All layers of a modality draw the same
token positions (their samplers share a seed and see the same counts). Combines across
processes through its declared states (pooled samples stay uniform).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from modalign.errors import ConfigError, MetricError
from modalign.metrics.baselines import baseline_report
from modalign.metrics.reservoir import Reservoir
from modalign.metrics.state import Stateful

__all__ = ["BaselineSampler"]


class BaselineSampler(Stateful):
    """Per layer and modality, a uniform sample of the token stream for the baselines.

    Args:
        num_layers: layers fed at every update.
        max_tokens: sample size per layer and modality (MMD costs O(max_tokens^2 d)).
        seed: seed of the sampling (and of KID's subsets in `report`).

    >>> s = BaselineSampler(num_layers=1, max_tokens=50)
    >>> g = torch.Generator().manual_seed(0)
    >>> s.update([torch.randn(80, 3, generator=g) + 1], [torch.randn(60, 3, generator=g)])
    >>> r = s.report(kid_subsets=5, kid_subset_size=20)
    >>> r["sampled_tokens"], r["mmd"] > 0
    ([50, 50], True)
    """

    def __init__(self, num_layers: int, max_tokens: int = 2048, seed: int = 0) -> None:
        if num_layers < 1 or max_tokens < 2:
            raise ConfigError(
                f"need num_layers >= 1 and max_tokens >= 2, got {num_layers}, {max_tokens}"
            )
        self.num_layers, self.max_tokens, self.seed = num_layers, max_tokens, seed
        for mod, offset in (("vision", 0), ("text", 1)):
            for k in range(num_layers):
                self.add_state(f"{mod}_{k}", Reservoir(max_tokens, seed * 2 + offset), "merge")

    def update(self, vision: Sequence[torch.Tensor], text: Sequence[torch.Tensor]) -> None:
        """Offer one batch: per layer, vision tokens (n_v, d) and text tokens (n_t, d)."""
        if len(vision) != self.num_layers or len(text) != self.num_layers:
            raise MetricError(
                f"expected {self.num_layers} layers, got {len(vision)} and {len(text)}"
            )
        for k in range(self.num_layers):
            getattr(self, f"vision_{k}").update(vision[k].detach())
            getattr(self, f"text_{k}").update(text[k].detach())

    def samples(self, mod: str) -> list[torch.Tensor]:
        """Per layer, the sampled tokens of `mod` ("vision" or "text")."""
        rows = [getattr(self, f"{mod}_{k}").rows for k in range(self.num_layers)]
        if any(r is None or r.shape[0] < 2 for r in rows):
            raise MetricError(f"fewer than 2 {mod} tokens were sampled; nothing to compare")
        return rows

    def report(self, **kwargs: Any) -> dict[str, Any]:
        """`baseline_report` on the samples (lower is better for every measure), plus the
        sample sizes used."""
        vision, text = self.samples("vision"), self.samples("text")
        out = baseline_report(vision, text, max_tokens=self.max_tokens, seed=self.seed, **kwargs)
        out["sampled_tokens"] = [int(vision[0].shape[0]), int(text[0].shape[0])]
        return out
