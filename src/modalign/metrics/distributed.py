"""Exact combination of token-set states across torch.distributed processes.

Moments are reduced in two all-reduces (global mean first, then each rank's scatter shifted to
it), which is exact and keeps float64 stability; norm caches, tails and reservoirs are
all-gathered (they are small). Works with gloo (CPU) and nccl (CUDA tensors).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from modalign.metrics.moments import Moments
from modalign.metrics.tokenset import TokenSetAccumulator, _Tail

__all__ = ["all_reduce_tokenset"]


def _device(group) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _sum(t: torch.Tensor, group, dev: torch.device) -> torch.Tensor:
    out = t.to(dev).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def _gather_rows(t: torch.Tensor, group, dev: torch.device) -> list[torch.Tensor]:
    """All-gather tensors whose first dimension differs between ranks."""
    world = dist.get_world_size(group)
    n = torch.tensor([t.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    sizes_i = [int(s) for s in sizes]
    width = max(sizes_i) if sizes_i else 0
    padded = torch.zeros((width, *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[: t.shape[0]] = t.to(dev)
    bufs = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded, group=group)
    return [b[:s].cpu() for b, s in zip(bufs, sizes_i, strict=True)]


def _reduce_moments(m: Moments | None, dim: int, group, dev: torch.device) -> Moments:
    m = Moments.empty(dim, dev) if m is None else m.to(dev)
    n = int(_sum(torch.tensor([m.n], dtype=torch.int64), group, dev))
    if n == 0:
        return Moments.empty(dim, dev)
    mu = _sum(m.mean * m.n, group, dev) / n  # (d,) global mean
    delta = m.mean - mu
    m2 = _sum(m.m2 + torch.outer(delta, delta) * m.n, group, dev)
    return Moments(n, mu, m2)


def _reduce_tail(tail: _Tail, dim: int, dtype: torch.dtype, group, dev, rank: int, world: int):
    x = tail.x if tail.x is not None else torch.empty(0, dim, dtype=dtype)
    idx = tail.idx.cpu() * world + rank  # unique across ranks
    xs = _gather_rows(x.to(dtype), group, dev)
    norms = _gather_rows(tail.norm.cpu(), group, dev)
    idxs = _gather_rows(idx, group, dev)
    merged = _Tail(tail.capacity, tail.largest)
    merged.update(torch.cat(xs), torch.cat(norms), torch.cat(idxs))
    return merged


def all_reduce_tokenset(acc: TokenSetAccumulator, dim: int, dtype: torch.dtype, group=None) -> None:
    """Replace acc's state, in place, by the combination of every rank's state."""
    dev = _device(group)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    home = acc.moments.mean.device if acc.moments is not None else torch.device("cpu")
    acc.moments = _reduce_moments(acc.moments, dim, group, dev).to(home)
    if acc.in_second_pass:
        counts = _sum(torch.tensor([acc.pass2_seen, acc.pass2_removed]), group, dev)
        acc.pass2_seen, acc.pass2_removed = int(counts[0]), int(counts[1])
        return
    stats = _sum(torch.tensor([float(acc.n_seen), acc.norm_sum], dtype=torch.float64), group, dev)
    acc.n_seen, acc.norm_sum = int(stats[0]), float(stats[1])
    if acc.outliers == "none":
        return
    acc.norm_chunks = [torch.cat(_gather_rows(acc.all_norms(), group, dev))]
    acc.top = _reduce_tail(acc.top, dim, dtype, group, dev, rank, world)
    acc.bottom = _reduce_tail(acc.bottom, dim, dtype, group, dev, rank, world)
    if acc.outliers == "median":
        res = acc.reservoir if acc.reservoir is not None else torch.empty(0, dim, dtype=dtype)
        pooled = torch.cat(_gather_rows(res.to(dtype), group, dev))
        if pooled.shape[0] > acc.median_sample:  # keep a seeded uniform subsample
            keep = torch.randperm(pooled.shape[0], generator=acc._gen)[: acc.median_sample]
            pooled = pooled[keep.sort().values]
        acc.reservoir = pooled
