"""A seeded uniform sample of a token stream: the source of the median bracket (and estimate)."""

from __future__ import annotations

import numpy as np
import torch

from modalign.errors import ConfigError, MetricError
from modalign.metrics.state import ReduceContext

__all__ = ["Reservoir"]


class Reservoir:
    """Uniform sample without replacement of at most `capacity` tokens (Algorithm R, seeded).

    Holds every token while at most `capacity` were seen (`complete`). Reduces across processes
    as a `Mergeable`: the pooled sample is again uniform over the union of all processes'
    tokens (per-process counts drawn multivariate-hypergeometrically, then uniform subsets),
    drawn from a generator every process seeds alike, so all processes keep the same sample.

    Args:
        capacity: the most tokens kept.
        seed: seed of the sampling.

    >>> r = Reservoir(3, seed=0)
    >>> r.update(torch.arange(10.0).reshape(5, 2))
    >>> r.seen, r.rows.shape[0], r.complete
    (5, 3, False)
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"median_sample must be >= 1, got {capacity}")
        self.capacity, self.seed = capacity, seed
        self.seen = 0
        self._rows: torch.Tensor | None = None  # (allocated, d) input dtype, grows to capacity
        self._gen = torch.Generator().manual_seed(seed)

    @property
    def rows(self) -> torch.Tensor | None:
        """The sample (min(seen, capacity), d) in the tokens' dtype; None before any token."""
        return None if self._rows is None else self._rows[: min(self.seen, self.capacity)]

    @property
    def complete(self) -> bool:
        """True when the sample is every token seen (so its statistics are exact)."""
        return self.seen <= self.capacity

    def update(self, x: torch.Tensor) -> None:
        """Offer tokens x (n, d)."""
        n0, cap = self.seen, self.capacity
        free = max(0, min(cap - n0, x.shape[0]))
        if free:
            self._reserve(n0 + free, x)
            self._rows[n0 : n0 + free].copy_(x[:free])
        if free < x.shape[0]:
            pos = torch.arange(free, x.shape[0])
            draws = torch.rand(pos.shape[0], generator=self._gen, dtype=torch.float64)
            slots = (draws * (n0 + pos + 1)).long()  # uniform in [0, tokens seen so far]
            hit = slots < cap
            pos, slots = pos[hit], slots[hit]
            # sequential semantics: a slot drawn twice keeps the later token
            order = torch.sort(slots, stable=True).indices
            pos, slots = pos[order], slots[order]
            last = torch.ones_like(slots, dtype=torch.bool)
            last[:-1] = slots[1:] != slots[:-1]
            idx = pos[last].to(x.device)
            self._rows.index_copy_(0, slots[last].to(x.device), x.index_select(0, idx))
        self.seen += x.shape[0]

    def _reserve(self, rows: int, like: torch.Tensor) -> None:
        """Grow the buffer geometrically up to `capacity` (small sets stay small)."""
        have = 0 if self._rows is None else self._rows.shape[0]
        if rows <= have:
            return
        size = min(self.capacity, max(rows, 2 * have, 64))
        buf = torch.empty(size, like.shape[1], dtype=like.dtype, device=like.device)
        if self._rows is not None:
            buf[: self.seen].copy_(self._rows[: self.seen])
        self._rows = buf

    def lower_median(self) -> torch.Tensor:
        """Per-dimension lower median of the sample (d,), in the tokens' dtype (torch's rule)."""
        if self.rows is None:
            raise MetricError("no tokens for the per-dimension median")
        return self.rows.median(dim=0).values

    def parts(self, ctx: ReduceContext) -> list[torch.Tensor]:
        """[sample (k, d), tokens seen (1,)] for the cross-process merge."""
        rows = self.rows if self.rows is not None else torch.empty(0, ctx.dim, dtype=ctx.dtype)
        return [rows.to(ctx.dtype), torch.tensor([self.seen], dtype=torch.int64)]

    def merge(self, parts_by_rank: list[list[torch.Tensor]], ctx: ReduceContext) -> Reservoir:
        """A uniform sample of the union: rank r contributes c_r rows, where (c_r) is one
        multivariate hypergeometric draw of min(N, capacity) from the ranks' token counts."""
        seen = [int(p[1][0]) for p in parts_by_rank]
        total = sum(seen)
        merged = Reservoir(self.capacity, self.seed)
        if total == 0:
            return merged
        rng = np.random.default_rng([self.seed % 2**63, total, len(seen)])  # same on every rank
        take = min(total, self.capacity)
        counts = rng.multivariate_hypergeometric(np.array(seen), take) if take < total else seen
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        pieces = []
        for (rows, _), c in zip(parts_by_rank, counts, strict=True):
            pick = torch.randperm(rows.shape[0], generator=gen)[: int(c)].sort().values
            pieces.append(rows[pick])
        home = self._rows.device if self._rows is not None else pieces[0].device
        merged._rows, merged.seen = torch.cat(pieces).to(home), total
        merged._gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return merged
