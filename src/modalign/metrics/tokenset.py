"""Streaming state of one token set (one layer, one modality) with an exact 3-sigma outlier rule.

How the exact rule streams (one pass in the common case, two when needed):
- every token updates the float64 moments of *all* tokens, and its norm goes to a norm cache
  (8 bytes a token: 1/d of the tokens' own size; the rule's median needs every norm);
- the `tail` tokens with the largest and the smallest norms (up to `tail_capacity` each side,
  kept in their input dtype, so exactly) are kept aside;
- at the end the bounds come from the cached norms; outliers are the most extreme norms, so when
  they all fit in the tails their moments are subtracted exactly (drop) and, for `median`,
  replaced by copies of the per-dimension median;
- if more outliers exist than the tails hold, `needs_second_pass` is set: the caller feeds the
  same tokens again and they are filtered against the now known bounds.
The per-dimension median (`median` mode only) is taken over a seeded uniform reservoir of at
most `median_sample` tokens: exact when the set is no larger, an estimate beyond.
"""

from __future__ import annotations

import torch

from modalign.metrics.moments import Moments, moments_from_tokens, subtract_moments
from modalign.metrics.outliers import OUTLIER_MODES, NormBounds, norm_bounds

__all__ = ["TokenSetAccumulator"]


class _Tail:
    """The `capacity` tokens with the largest (or smallest) norms seen so far, kept exactly.

    Buffers are allocated once and overwritten in place: long-lived allocations made batch
    after batch fragment the heap and grow the process's memory with N.
    """

    def __init__(self, capacity: int, largest: bool) -> None:
        self.capacity, self.largest = capacity, largest
        self.size = 0
        self._x: torch.Tensor | None = None  # (capacity, d) input dtype
        self._norm = torch.empty(0, dtype=torch.float64)  # (capacity,)
        self._idx = torch.empty(0, dtype=torch.int64)  # (capacity,) global token index

    @property
    def x(self) -> torch.Tensor | None:
        return None if self._x is None else self._x[: self.size]

    @property
    def norm(self) -> torch.Tensor:
        return self._norm[: self.size]

    @property
    def idx(self) -> torch.Tensor:
        return self._idx[: self.size]

    def update(self, x: torch.Tensor, norm: torch.Tensor, idx: torch.Tensor) -> None:
        if self.capacity == 0 or x.shape[0] == 0:
            return
        if self._x is None:
            self._x = torch.empty(self.capacity, x.shape[1], dtype=x.dtype, device=x.device)
            self._norm = torch.empty(self.capacity, dtype=torch.float64, device=x.device)
            self._idx = torch.empty(self.capacity, dtype=torch.int64, device=x.device)
        pick = torch.topk(norm, min(self.capacity, norm.shape[0]), largest=self.largest).indices
        cand_norm = torch.cat([self.norm, norm[pick].to(self._norm.device)])
        keep = min(self.capacity, cand_norm.shape[0])
        order = torch.topk(cand_norm, keep, largest=self.largest).indices
        cand_x = torch.cat([self.x, x[pick].to(self._x.device, self._x.dtype)])
        cand_idx = torch.cat([self.idx, idx[pick].to(self._idx.device)])
        self._x[:keep].copy_(cand_x[order])
        self._norm[:keep].copy_(cand_norm[order])
        self._idx[:keep].copy_(cand_idx[order])
        self.size = keep


class TokenSetAccumulator:
    """Moments, norms and outlier bookkeeping of one layer's tokens of one modality."""

    def __init__(
        self,
        outliers: str = "drop",
        *,
        k: float = 3.0,
        tail_capacity: int = 512,
        median_sample: int = 4096,
        seed: int = 0,
    ) -> None:
        if outliers not in OUTLIER_MODES:
            raise ValueError(f"outliers must be one of {OUTLIER_MODES}, got {outliers!r}")
        self.outliers, self.k = outliers, k
        self.moments: Moments | None = None
        self.n_seen = 0  # tokens fed in pass 1
        self.norm_sum = 0.0  # float64 sum of norms, pass 1 (text-centric scale)
        self.norm_chunks: list[torch.Tensor] = []  # cache of norms (float64, CPU)
        self.top = _Tail(tail_capacity, largest=True)
        self.bottom = _Tail(tail_capacity, largest=False)
        self.median_sample = median_sample
        self.reservoir: torch.Tensor | None = None  # (<= median_sample, d)
        self._gen = torch.Generator().manual_seed(seed)
        self._bounds: NormBounds | None = None  # memo of compute_bounds
        self._bounds_key: tuple | None = None
        # second pass state
        self.bounds: NormBounds | None = None
        self.pass2_removed = 0
        self.pass2_seen = 0

    # ------------------------------------------------------------------ feeding
    @property
    def dim(self) -> int | None:
        return None if self.moments is None else self.moments.dim

    @property
    def in_second_pass(self) -> bool:
        return self.bounds is not None

    def update(self, x: torch.Tensor) -> None:
        """Feed tokens x (n, d). Caller has validated shape and finiteness."""
        norms = x.to(torch.float64).norm(dim=1)  # (n,)
        if self.in_second_pass:
            out = self.bounds.is_outlier(norms)
            self.pass2_seen += x.shape[0]
            self.pass2_removed += int(out.sum())
            self.moments = _merge_into(self.moments, x[~out])
            return
        self.moments = _merge_into(self.moments, x)
        self.norm_sum += float(norms.sum())
        if self.outliers != "none":
            idx = torch.arange(self.n_seen, self.n_seen + x.shape[0], device=x.device)
            self.norm_chunks.append(norms.cpu())
            self.top.update(x, norms, idx)
            self.bottom.update(x, norms, idx)
            if self.outliers == "median":
                self._reservoir_update(x)
        self.n_seen += x.shape[0]

    def _reservoir_update(self, x: torch.Tensor) -> None:
        """Uniform reservoir sample (Algorithm R, seeded) for the per-dimension median."""
        cap, n0 = self.median_sample, self.n_seen
        free = max(0, min(cap - n0, x.shape[0]))
        if free:
            head = x[:free].detach().clone()
            self.reservoir = head if self.reservoir is None else torch.cat([self.reservoir, head])
        if free == x.shape[0]:
            return
        pos = torch.arange(free, x.shape[0])
        slots = (
            torch.rand(pos.shape[0], generator=self._gen, dtype=torch.float64) * (n0 + pos + 1)
        ).long()
        for p, s in zip(pos[slots < cap].tolist(), slots[slots < cap].tolist(), strict=True):
            self.reservoir[s] = x[p]

    # ------------------------------------------------------------------ results
    def all_norms(self) -> torch.Tensor:
        return (
            torch.cat(self.norm_chunks) if self.norm_chunks else torch.empty(0, dtype=torch.float64)
        )

    def compute_bounds(self) -> NormBounds | None:
        """3-sigma bounds from every cached norm (memoized until more norms arrive)."""
        if self.outliers == "none" or self.n_seen == 0:
            return None
        key = (self.n_seen, len(self.norm_chunks), id(self.norm_chunks[-1]))
        if self._bounds_key != key:
            self._bounds, self._bounds_key = norm_bounds(self.all_norms(), self.k), key
        return self._bounds

    def needs_second_pass(self) -> bool:
        """True when the outliers outnumber the exactly kept tails (see module docstring)."""
        bounds = self.compute_bounds()
        if bounds is None or self.in_second_pass:
            return False
        norms = self.all_norms()
        n_high, n_low = int(bounds.is_high(norms).sum()), int(bounds.is_low(norms).sum())
        return n_high > self.top.norm.shape[0] or n_low > self.bottom.norm.shape[0]

    def begin_second_pass(self) -> None:
        """Freeze the bounds from pass 1 and reset the moments for a filtered re-feed."""
        self.bounds = self.compute_bounds()
        self.moments = None
        self.pass2_seen = self.pass2_removed = 0

    def median_vector(self) -> torch.Tensor:
        """Per-dimension (lower) median over the reservoir, float64."""
        if self.reservoir is None:
            raise ValueError("no tokens for the per-dimension median")
        return self.reservoir.to(torch.float64).median(dim=0).values

    def finalize(self) -> tuple[Moments, int]:
        """Moments after outlier handling, and the number of outlier tokens found."""
        if self.moments is None or self.n_seen == 0:
            return Moments.empty(self.dim or 0), 0
        if self.outliers == "none":
            return self.moments, 0
        if self.in_second_pass:
            if self.pass2_seen != self.n_seen:
                raise ValueError(
                    f"second pass saw {self.pass2_seen} tokens, first pass {self.n_seen}: "
                    "the same tokens must be fed again"
                )
            kept, removed = self.moments or Moments.empty(self.dim or 0), self.pass2_removed
        else:
            if self.needs_second_pass():
                raise RuntimeError("outliers exceed the tail cache: run a second pass first")
            bounds = self.compute_bounds()
            parts = [
                t.x[bounds.is_high(t.norm) if t is self.top else bounds.is_low(t.norm)]
                for t in (self.top, self.bottom)
                if t.x is not None
            ]
            out = torch.cat(parts) if parts else torch.empty(0, self.moments.dim)
            kept = subtract_moments(self.moments, moments_from_tokens(out))
            removed = out.shape[0]
        if self.outliers == "median" and removed:
            kept = Moments(kept.n, kept.mean.clone(), kept.m2.clone())
            kept.add_copies(self.median_vector().to(kept.mean.device), removed)
        return kept, removed


def _merge_into(m: Moments | None, x: torch.Tensor) -> Moments:
    """Add tokens x (n, d) to m, starting from empty moments on x's device."""
    return (Moments.empty(x.shape[1], x.device) if m is None else m).update(x)
