"""Exact combination of declared accumulator states across torch.distributed processes.

Every stateful class declares its states and how each reduces (`Stateful.add_state`); this module
only executes those declarations, one reducer per kind (`REDUCERS`):

- ``sum`` / ``max``: one all-reduce;
- ``cat``: an all-gather of rows that differ in number between ranks (padded to the longest);
- ``moments``: two all-reduces, global mean first, then each rank's scatter shifted to it, which
  is exact and keeps float64 stability;
- ``merge``: the object's `parts` are all-gathered and its own `merge` combines them;
- ``nested``: the value's own declared states, recursively.

Works with gloo (CPU tensors) and nccl (CUDA tensors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from modalign.metrics.moments import Moments
from modalign.metrics.state import ReduceContext, Stateful
from modalign.registry import Registry

__all__ = ["REDUCERS", "agree_rows", "all_reduce_state"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class _Comm:
    """The process group and the device its collectives need."""

    group: Any
    device: torch.device


Reducer = Callable[[Any, ReduceContext, _Comm], Any]
REDUCERS: Registry[Reducer] = Registry("state reduction")


def _comm(group) -> _Comm:
    if dist.get_backend(group) == "nccl":
        return _Comm(group, torch.device("cuda", torch.cuda.current_device()))
    return _Comm(group, torch.device("cpu"))


def _all_reduce(t: torch.Tensor, comm: _Comm, op=dist.ReduceOp.SUM) -> torch.Tensor:
    out = t.to(comm.device).clone()
    dist.all_reduce(out, op=op, group=comm.group)
    return out.to(t.device)


def _gather_rows(t: torch.Tensor, comm: _Comm) -> list[torch.Tensor]:
    """All-gather tensors whose first dimension differs between ranks (index = rank)."""
    world = dist.get_world_size(comm.group)
    n = torch.tensor([t.shape[0]], device=comm.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=comm.group)
    sizes_i = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes_i), *t.shape[1:]), dtype=t.dtype, device=comm.device)
    padded[: t.shape[0]] = t.to(comm.device)
    bufs = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded, group=comm.group)
    return [b[:s].to(t.device) for b, s in zip(bufs, sizes_i, strict=True)]


def _numeric(op) -> Reducer:
    def reduce(value, ctx: ReduceContext, comm: _Comm):
        if isinstance(value, torch.Tensor):
            return _all_reduce(value, comm, op)
        dtype = torch.float64 if isinstance(value, float) else torch.int64
        out = _all_reduce(torch.tensor([value], dtype=dtype), comm, op)
        return type(value)(out.item())

    return reduce


REDUCERS.register("sum")(_numeric(dist.ReduceOp.SUM))
REDUCERS.register("max")(_numeric(dist.ReduceOp.MAX))


@REDUCERS.register("cat")
def _reduce_cat(value, ctx: ReduceContext, comm: _Comm):
    """Rows of every rank in rank order; a list of chunks becomes a one-chunk list."""
    local = torch.cat(value) if isinstance(value, list) else value
    out = torch.cat(_gather_rows(local, comm))
    return [out] if isinstance(value, list) else out


@REDUCERS.register("moments")
def _reduce_moments(value: Moments | None, ctx: ReduceContext, comm: _Comm) -> Moments | None:
    home = value.mean.device if value is not None else torch.device("cpu")
    m = Moments.empty(ctx.dim, comm.device) if value is None else value.to(comm.device)
    n = int(_all_reduce(torch.tensor([m.n], dtype=torch.int64), comm))
    if n == 0:
        return value
    mu = _all_reduce(m.mean * m.n, comm) / n  # (d,) global mean
    delta = m.mean - mu
    m2 = _all_reduce(m.m2 + torch.outer(delta, delta) * m.n, comm)
    return Moments(n, mu, m2).to(home)


@REDUCERS.register("merge")
def _reduce_merge(value, ctx: ReduceContext, comm: _Comm):
    gathered = [_gather_rows(part, comm) for part in value.parts(ctx)]  # [part][rank]
    by_rank = [list(p) for p in zip(*gathered, strict=True)]  # [rank][part]
    return value.merge(by_rank, ctx)


@REDUCERS.register("nested")
def _reduce_nested(value: Stateful | None, ctx: ReduceContext, comm: _Comm):
    if value is not None:
        _reduce_all(value, ctx, comm)
    return value


def _reduce_all(obj: Stateful, ctx: ReduceContext, comm: _Comm) -> None:
    declared = obj.declared_states()
    for name in obj.states_to_reduce():
        setattr(obj, name, REDUCERS[declared[name]](getattr(obj, name), ctx, comm))


def all_reduce_state(obj: Stateful, ctx: ReduceContext, group=None) -> None:
    """Replace, in place, each state `obj` reduces now by its combination over all ranks."""
    _reduce_all(obj, ctx, _comm(group))


def agree_rows(
    dim: int | None, dtypes: list[torch.dtype | None], group=None
) -> tuple[int, list[torch.dtype | None], int, int]:
    """Token width and per-state dtypes every rank agrees on (a rank that saw no tokens knows
    neither), plus (rank, world): (dim, dtypes, rank, world)."""
    comm = _comm(group)
    codes = [(_DTYPES.index(t) if t is not None else -1) for t in dtypes]
    local = torch.tensor([dim or 0, *codes], dtype=torch.int64)
    agreed = _all_reduce(local, comm, dist.ReduceOp.MAX).tolist()
    types = [_DTYPES[c] if c >= 0 else None for c in agreed[1:]]
    return int(agreed[0]), types, dist.get_rank(group), dist.get_world_size(group)
