"""Streaming state of one token set (one layer, one modality) with an exact 3-sigma outlier rule.

How the exact rule streams. The first pass over the data:
- every token updates the float64 moments of *all* tokens, and its norm goes to a norm cache
  (8 bytes a token: 1/d of the tokens' own size; the rule's median needs every norm);
- the tokens with the largest and the smallest norms (up to `tail_capacity` each side, kept in
  their input dtype, so exactly) are kept aside (`Tail`);
- in `median` mode a seeded uniform sample of up to `median_sample` tokens is kept (`Reservoir`).
At the end of the first pass the bounds come from the cached norms. Outliers are the most
extreme norms, so when they all fit in the tails their moments are subtracted exactly (drop)
and, for `median`, replaced by copies of the per-dimension lower median of all tokens.

Further passes over the same tokens happen only when needed, and share one re-feed:
- tail overflow (more outliers than the tails hold): the second pass rebuilds the moments,
  filtering every token against the now known bounds;
- `median` mode with `median="exact"` (the default), for a set that has outliers and more tokens
  than the sample: the median is found exactly by bracketing from the sample (`MedianSearch`):
  the second pass normally settles it; a bracket that missed (~1e-9 per dimension) costs one
  third pass. `median="estimate"` takes the sample's median instead (exact when the set has at
  most `median_sample` tokens, an estimate beyond) and never adds a pass.
"""

from __future__ import annotations

import torch

from modalign.errors import ConfigError, DataError
from modalign.metrics.median import MEDIAN_MODES, MedianSearch
from modalign.metrics.moments import Moments, moments_from_tokens, subtract_moments
from modalign.metrics.outliers import OUTLIER_MODES, NormBounds, norm_bounds
from modalign.metrics.reservoir import Reservoir
from modalign.metrics.state import Stateful
from modalign.metrics.tails import Tail

__all__ = ["TokenSetAccumulator"]


class TokenSetAccumulator(Stateful):
    """Moments, norms and outlier bookkeeping of one layer's tokens of one modality.

    Args:
        outliers: one of `OUTLIER_MODES` (drop, median, none).
        k: the outlier rule's k (tokens beyond k standard deviations of the median norm).
        tail_capacity: tokens kept exactly at each end of the norm range.
        median: `exact` or `estimate` (see the module docstring).
        median_sample: size of the uniform sample behind the median.
        seed: seed of that sample.
    """

    def __init__(
        self,
        outliers: str = "drop",
        *,
        k: float = 3.0,
        tail_capacity: int = 512,
        median: str = "exact",
        median_sample: int = 4096,
        seed: int = 0,
    ) -> None:
        if outliers not in OUTLIER_MODES:
            raise ConfigError(f"outliers must be one of {OUTLIER_MODES}, got {outliers!r}")
        if median not in MEDIAN_MODES:
            raise ConfigError(f"median must be one of {MEDIAN_MODES}, got {median!r}")
        self.outliers, self.k, self.median = outliers, k, median
        self.median_sample, self.seed = median_sample, seed
        # first pass
        self.add_state("moments", None, "moments")
        self.add_state("n_seen", 0, "sum")
        self.add_state("norm_sum", 0.0, "sum")  # float64 sum of norms (text-centric scale)
        self.add_state("norms", [torch.empty(0, dtype=torch.float64)], "cat")  # norm cache
        self.add_state("top", Tail(tail_capacity, largest=True), "merge")
        self.add_state("bottom", Tail(tail_capacity, largest=False), "merge")
        self.add_state("reservoir", Reservoir(median_sample, seed), "merge")
        # later passes
        self.add_state("pass_seen", 0, "sum")
        self.add_state("pass_removed", 0, "sum")
        self.add_state("search", None, "nested")  # MedianSearch
        self.pass_index = 0  # 0 = first pass
        self.frozen_bounds: NormBounds | None = None  # the bounds a filtering second pass uses
        self.dim: int | None = None
        self.dtype: torch.dtype | None = None
        self._search_pass = -1  # the pass the median search accumulates in
        # memo of outlier_bounds(): (cache key, bounds, (high, low) outlier counts)
        self._memo: tuple[tuple, NormBounds | None, tuple[int, int]] | None = None

    # ------------------------------------------------------------------ feeding
    @property
    def in_second_pass(self) -> bool:
        """True once the moments are being rebuilt from a filtered re-feed (tail overflow)."""
        return self.frozen_bounds is not None

    def _search_active(self) -> bool:
        return self.search is not None and self._search_pass == self.pass_index

    def states_to_reduce(self) -> list[str]:
        """The states the current pass accumulates (each pass is all-reduced once)."""
        if self.pass_index == 0:
            names = ["moments", "n_seen", "norm_sum"]
            if self.outliers != "none":
                names += ["norms", "top", "bottom"]
            if self.outliers == "median":
                names.append("reservoir")
            return names
        names = ["pass_seen"]
        if self.pass_index == 1 and self.in_second_pass:
            names += ["moments", "pass_removed"]
        if self._search_active():
            names.append("search")
        return names

    def update(self, x: torch.Tensor) -> None:
        """Feed tokens x (n, d). Caller has validated shape and finiteness."""
        if self.dtype is None:
            self.dim, self.dtype = x.shape[1], x.dtype
        elif x.dtype != self.dtype:
            raise DataError(f"tokens changed dtype between batches ({self.dtype} -> {x.dtype})")
        if self.pass_index > 0:
            self._update_later_pass(x)
            return
        norms = x.to(torch.float64).norm(dim=1)  # (n,)
        self.moments = _merge_into(self.moments, x)
        self.norm_sum += float(norms.sum())
        if self.outliers != "none":
            self.norms.append(norms.cpu())
            self.top.update(x, norms)
            self.bottom.update(x, norms)
            if self.outliers == "median":
                self.reservoir.update(x)
        self.n_seen += x.shape[0]

    def _update_later_pass(self, x: torch.Tensor) -> None:
        self.pass_seen += x.shape[0]
        if self.pass_index == 1 and self.in_second_pass:
            out = self.frozen_bounds.is_outlier(x.to(torch.float64).norm(dim=1))
            self.pass_removed += int(out.sum())
            self.moments = _merge_into(self.moments, x[~out])
        if self._search_active():
            self.search.update(x)

    # ------------------------------------------------------------------ passes
    def all_norms(self) -> torch.Tensor:
        """Every cached norm of the first pass (float64)."""
        return torch.cat(self.norms)

    def outlier_bounds(self) -> NormBounds | None:
        """3-sigma bounds from every cached norm (None without outlier handling)."""
        return self._outlier_stats()[0]

    def _outlier_counts(self) -> tuple[int, int]:
        """(high, low) outliers among the first pass's norms."""
        return self._outlier_stats()[1]

    def _outlier_stats(self) -> tuple[NormBounds | None, tuple[int, int]]:
        """Bounds and outlier counts of the cached norms, recomputed only when norms arrive."""
        if self.outliers == "none" or self.n_seen == 0:
            return None, (0, 0)
        key = (self.n_seen, len(self.norms), id(self.norms[-1]))
        if self._memo is None or self._memo[0] != key:
            norms = self.all_norms()
            bounds = norm_bounds(norms, self.k)
            counts = int(bounds.is_high(norms).sum()), int(bounds.is_low(norms).sum())
            self._memo = (key, bounds, counts)
        return self._memo[1], self._memo[2]

    def _tails_overflow(self) -> bool:
        high, low = self._outlier_counts()
        return high > self.top.size or low > self.bottom.size

    def _search_needed(self) -> bool:
        return (
            self.outliers == "median"
            and self.median == "exact"
            and self.search is None
            and not self.reservoir.complete
            and sum(self._outlier_counts()) > 0
        )

    def needs_another_pass(self) -> bool:
        """After a pass was fed (and all-reduced): must the same tokens be fed once more?"""
        if self.pass_index == 0:
            return self._tails_overflow() or self._search_needed()
        if self.pass_seen != self.n_seen:
            raise DataError(
                f"pass {self.pass_index + 1} saw {self.pass_seen} tokens, the first pass "
                f"{self.n_seen}: the same tokens must be fed again"
            )
        return self._search_active() and self.search.needs_pass()

    def begin_next_pass(self) -> None:
        """Plan the next pass (idle for this set if it needs none): freeze the outlier bounds
        for a filtering re-feed, and/or start or continue the exact median search."""
        if self.pass_index == 0:
            if self._tails_overflow():
                self.frozen_bounds = self.outlier_bounds()
                self.moments = None
                self.pass_removed = 0
            if self._search_needed():
                self.search = MedianSearch(self.n_seen, self.reservoir.rows)
                self.reservoir = Reservoir(self.median_sample, self.seed)  # free the sample
                self._search_pass = 1
        elif self._search_active() and self.needs_another_pass():
            self.search.begin_pass()
            self._search_pass = self.pass_index + 1
        self.pass_index += 1
        self.pass_seen = 0

    # ------------------------------------------------------------------ results
    def median_vector(self) -> torch.Tensor:
        """Per-dimension lower median (d,) in the tokens' dtype: exact unless median="estimate"
        and the set has more tokens than the sample."""
        if self.search is not None:
            return self.search.result()
        return self.reservoir.lower_median()

    def finalize(self) -> tuple[Moments, int]:
        """Moments after outlier handling, and the number of outlier tokens found."""
        if self.n_seen == 0:
            return Moments.empty(self.dim or 0), 0
        if self.outliers == "none":
            return self.moments, 0
        if self.needs_another_pass():
            raise RuntimeError(
                "outlier handling needs another pass over the same tokens first "
                "(see MIRAccumulator.needs_another_pass)"
            )
        if self.in_second_pass:
            kept, removed = self.moments or Moments.empty(self.dim), self.pass_removed
        else:
            bounds = self.outlier_bounds()
            parts = [
                t.x[bounds.is_high(t.norm) if t is self.top else bounds.is_low(t.norm)]
                for t in (self.top, self.bottom)
                if t.x is not None
            ]
            out = torch.cat(parts) if parts else torch.empty(0, self.dim)
            kept = subtract_moments(self.moments, moments_from_tokens(out))
            removed = out.shape[0]
        if self.outliers == "median" and removed:
            kept = Moments(kept.n, kept.mean.clone(), kept.m2.clone())
            kept.add_copies(self.median_vector().to(kept.mean.device), removed)
        return kept, removed


def _merge_into(m: Moments | None, x: torch.Tensor) -> Moments:
    """Add tokens x (n, d) to m, starting from empty moments on x's device."""
    return (Moments.empty(x.shape[1], x.device) if m is None else m).update(x)
