"""Declared accumulator state, as torchmetrics' `add_state(name, default, dist_reduce_fx)`.

Every stateful piece of the MIR math declares each state it keeps and how that state combines
across processes. `modalign.metrics.distributed` reduces from these declarations only, so no
reduction code reaches into a class's private fields. Reduction kinds:

- ``sum``: numbers or tensors, added (counts, norm sums, histograms);
- ``max``: numbers or tensors, element-wise maximum;
- ``cat``: a tensor, or a list of tensors, whose rows differ between processes (norm caches, kept
  values): the rows of every process, in rank order;
- ``moments``: a `Moments` (or None), reduced exactly in two steps (global mean, then each
  process's scatter shifted to it);
- ``merge``: an object implementing `Mergeable`: each process's `parts` are gathered and the
  object's own `merge` combines them (top-k tails, pooled reservoir samples);
- ``nested``: a `Stateful` (or None) whose own declared states are reduced recursively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from modalign.errors import ConfigError

__all__ = ["REDUCE_KINDS", "Mergeable", "ReduceContext", "Stateful"]

REDUCE_KINDS = ("sum", "max", "cat", "moments", "merge", "nested")


@dataclass(frozen=True)
class ReduceContext:
    """What a reduction needs to know beyond the state itself: the agreed width and dtype of
    token rows (a process that saw no tokens has neither) and this process's place."""

    dim: int
    dtype: torch.dtype
    rank: int = 0
    world: int = 1


class Mergeable(Protocol):
    """A state reduced by gathering its parts from every process and merging them locally."""

    def parts(self, ctx: ReduceContext) -> list[torch.Tensor]:
        """Tensors to gather; each may have a different first dimension on each process."""
        ...

    def merge(self, parts_by_rank: list[list[torch.Tensor]], ctx: ReduceContext) -> Any:
        """The combined state from every process's `parts` (index = rank); pure, no comms."""
        ...


class Stateful:
    """Base of the accumulators: `add_state` declares a state, its default and its reduction."""

    def add_state(self, name: str, default: Any, reduce: str) -> None:
        """Declare state `name` (set to `default`) that combines across processes by `reduce`.

        Args:
            name: attribute name of the state.
            default: its initial value.
            reduce: one of `REDUCE_KINDS`.

        >>> class Counter(Stateful):
        ...     def __init__(self):
        ...         self.add_state("n", 0, "sum")
        >>> c = Counter(); c.n += 3
        >>> c.declared_states(), c.n
        ({'n': 'sum'}, 3)
        """
        if reduce not in REDUCE_KINDS:
            raise ConfigError(
                f"state {name!r}: reduce must be one of {REDUCE_KINDS}, got {reduce!r}"
            )
        if "_declared" not in self.__dict__:
            self._declared: dict[str, str] = {}
        self._declared[name] = reduce
        setattr(self, name, default)

    def declared_states(self) -> dict[str, str]:
        """Every declared state and its reduction kind."""
        return dict(self.__dict__.get("_declared", {}))

    def states_to_reduce(self) -> list[str]:
        """The states the next all-reduce combines (all of them unless a subclass narrows it,
        e.g. to the states the current pass over the data accumulated)."""
        return list(self.declared_states())
