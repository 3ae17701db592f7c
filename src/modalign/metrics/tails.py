"""The tokens with the most extreme norms of a stream, kept exactly (the 3-sigma rule's outliers)."""

from __future__ import annotations

import torch

from modalign.metrics.state import ReduceContext

__all__ = ["Tail"]


class Tail:
    """The `capacity` tokens with the largest (or smallest) norms seen so far, in their input dtype.

    Buffers are allocated once and overwritten in place: long-lived allocations made batch
    after batch fragment the heap and grow the process's memory with N. Reduces across
    processes as a `Mergeable` (the `capacity` most extreme of the union).

    Args:
        capacity: how many tokens to keep (0 keeps none).
        largest: keep the largest norms (True) or the smallest (False).

    >>> t = Tail(2, largest=True)
    >>> x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    >>> t.update(x, x.norm(dim=1))
    >>> t.norm.tolist()
    [3.0, 2.0]
    """

    def __init__(self, capacity: int, largest: bool) -> None:
        self.capacity, self.largest = capacity, largest
        self.size = 0
        self._x: torch.Tensor | None = None  # (capacity, d) input dtype
        self._norm = torch.empty(0, dtype=torch.float64)  # (capacity,)

    @property
    def x(self) -> torch.Tensor | None:
        """The kept tokens (size, d), most extreme first; None before any token."""
        return None if self._x is None else self._x[: self.size]

    @property
    def norm(self) -> torch.Tensor:
        """Their norms (size,), float64."""
        return self._norm[: self.size]

    def update(self, x: torch.Tensor, norm: torch.Tensor) -> None:
        """Offer tokens x (n, d) with their norms (n,)."""
        if self.capacity == 0 or x.shape[0] == 0:
            return
        if self._x is None:
            self._x = torch.empty(self.capacity, x.shape[1], dtype=x.dtype, device=x.device)
            self._norm = torch.empty(self.capacity, dtype=torch.float64, device=x.device)
        pick = torch.topk(norm, min(self.capacity, norm.shape[0]), largest=self.largest).indices
        cand_norm = torch.cat([self.norm, norm[pick].to(self._norm.device, torch.float64)])
        keep = min(self.capacity, cand_norm.shape[0])
        order = torch.topk(cand_norm, keep, largest=self.largest).indices
        cand_x = torch.cat([self.x, x[pick].to(self._x.device, self._x.dtype)])
        self._x[:keep].copy_(cand_x[order])
        self._norm[:keep].copy_(cand_norm[order])
        self.size = keep

    def parts(self, ctx: ReduceContext) -> list[torch.Tensor]:
        """[tokens (size, d), norms (size,)] for the cross-process merge."""
        x = self.x if self.x is not None else torch.empty(0, ctx.dim, dtype=ctx.dtype)
        return [x.to(ctx.dtype), self.norm]

    def merge(self, parts_by_rank: list[list[torch.Tensor]], ctx: ReduceContext) -> Tail:
        """The tail of the union of every process's tail (each is exact, so the union's is)."""
        merged = Tail(self.capacity, self.largest)
        xs = torch.cat([p[0] for p in parts_by_rank])
        norms = torch.cat([p[1] for p in parts_by_rank])
        if xs.shape[0]:
            home = self._x.device if self._x is not None else xs.device
            merged.update(xs.to(home), norms.to(home))
        return merged
