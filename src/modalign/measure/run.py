"""Stream image/text pairs through a model adapter into the MIR accumulators.

    result = run_mir(adapter, pairs, batch_size=8, template="chat")
    summary = run_repeats(adapter, draw=source.sample, n=100, repeats=10, seed=0)

Memory does not grow with the number of samples: each batch's hidden states are reduced to
the accumulators' sums and dropped. Under torch.distributed each rank scores a strided shard
(`pairs[rank::world]`, no duplicates, no padding) and the accumulator states are all-reduced.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from modalign.data.pairs import Pair
from modalign.errors import ConfigError, DataError, MetricError
from modalign.metrics import MEDIAN_MODES, MIRAccumulator, MIRResult
from modalign.metrics.baseline_sampler import BaselineSampler
from modalign.models.adapters.base import VLMAdapter
from modalign.models.adapters.states import LayerStates, ModelBatch


@dataclass(frozen=True)
class RunOptions:
    """How to turn pairs into tokens and tokens into MIR (everything but the data and model)."""

    batch_size: int = 8
    template: str = "chat"
    max_text_tokens: int | None = None
    layers: Sequence[int] | None = None
    sqrt: str = "exact"
    outliers: str = "drop"
    median: str = "exact"  # `median` outliers: exact median (may add a pass) or sample estimate
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.median not in MEDIAN_MODES:
            raise ConfigError(f"median must be one of {MEDIAN_MODES}, got {self.median!r}")


@dataclass
class RepeatSummary:
    """MIR over R seeded subsets of N pairs (the paper's Table 6): mean, range, every run."""

    n: int
    seeds: list[int]
    results: list[MIRResult] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [r.mir for r in self.results]

    def as_dict(self) -> dict[str, Any]:
        """Mean, min, max, sample std and the per-repeat values (for JSON metadata)."""
        v = self.values
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        return {"n": self.n, "repeats": len(v), "seeds": self.seeds, "mir": v,
                "mean": mean, "min": min(v), "max": max(v), "std": std}  # fmt: skip


def distributed_context(group: Any = None) -> tuple[int, int]:
    """(rank, world size) of the current torch.distributed group, or (0, 1) when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def shard(pairs: Sequence[Pair], rank: int, world: int) -> Sequence[Pair]:
    """This rank's strided share: every sample goes to exactly one rank (lazy stays lazy)."""
    return pairs[rank::world]


def locate_nonfinite(states: LayerStates, batch: ModelBatch) -> MetricError | None:
    """An error naming layer, modality and sample of the first NaN/inf at selected positions.

    Called only after the accumulator refused a batch (it checks finiteness, once): this finds
    which sample it was, so the message can name it.
    """
    for layer, h in zip(states.layer_ids, states.hidden, strict=True):
        for mod, mask in (("vision", states.vision_mask), ("text", states.text_mask)):
            bad = ~torch.isfinite(h).all(dim=-1) & mask  # (B, T)
            if bad.any():
                row = int(bad.any(dim=1).nonzero()[0])
                ids = batch.sample_ids[row] if row < len(batch.sample_ids) else {}
                return MetricError(
                    f"layer {layer}: NaN/inf activations at {int(bad.sum())} {mod} token(s) "
                    f"(first in sample image={ids.get('image')!r} text={ids.get('text')!r}, "
                    f"dtype {h.dtype}); in float16 this is usually an overflow: "
                    "use --dtype bfloat16 or float32"
                )
    return None


def _batches(pairs: Sequence[Pair], size: int) -> Iterator[Sequence[Pair]]:
    for i in range(0, len(pairs), size):
        yield pairs[i : i + size]


class _Feeder:
    """Runs the adapter over a shard and feeds the accumulator; counts truncated passages."""

    def __init__(self, adapter: VLMAdapter, opts: RunOptions, layer_ids: list[int]) -> None:
        self.adapter, self.opts, self.layer_ids = adapter, opts, layer_ids
        self.truncated = 0

    def feed(
        self, acc: MIRAccumulator, pairs: Sequence[Pair], desc: str, sampler: Any = None
    ) -> None:
        from tqdm.auto import tqdm

        self.truncated = 0
        bar = tqdm(total=len(pairs), desc=desc, unit="sample", file=sys.stderr,
                   disable=not self.opts.progress, leave=False)  # fmt: skip
        with bar:
            for lazy_chunk in _batches(pairs, self.opts.batch_size):
                chunk = list(lazy_chunk)  # decode this batch's images only
                batch = self.adapter.prepare(
                    chunk, template=self.opts.template, max_text_tokens=self.opts.max_text_tokens
                )
                states = self.adapter.forward(batch, layers=self.layer_ids)
                vision, text = states.tokens()
                try:
                    acc.update(vision=vision, text=text)
                except MetricError as exc:
                    located = locate_nonfinite(states, batch)
                    raise (located or exc) from exc
                if sampler is not None:  # the streaming baselines see the same forward pass
                    sampler.update(vision, text)
                self.truncated += sum(batch.truncated)
                bar.update(len(chunk))


def _all_sum(value: int, group: Any, world: int) -> int:
    """Sum an integer over ranks (identity when not distributed)."""
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, group=group)
    return int(t)


def run_mir(
    adapter: VLMAdapter,
    pairs: Sequence[Pair],
    options: RunOptions | None = None,
    *,
    group: Any = None,
    baselines: BaselineSampler | None = None,
) -> MIRResult:
    """MIR of `adapter`'s model over `pairs`; sharded across ranks when torch.distributed is up.

    `baselines`: a `BaselineSampler` fed in the first pass (same forward passes); its report
    goes to `result.metadata["baselines"]`.
    """
    opts = options or RunOptions()
    if not pairs:
        raise DataError("no image/text pairs to score")
    layer_ids = adapter.layer_ids(opts.layers)
    rank, world = distributed_context(group)
    mine = shard(pairs, rank, world)
    acc = MIRAccumulator(
        len(layer_ids), layer_ids=layer_ids, outliers=opts.outliers, median=opts.median
    )
    feeder = _Feeder(adapter, opts, layer_ids)
    feeder.feed(acc, mine, "MIR", baselines)
    if world > 1:
        acc.all_reduce(group)
        if baselines is not None:
            _reduce_sampler(baselines, acc, group)
    while acc.needs_another_pass:  # identical on every rank after the all-reduce
        acc.begin_next_pass()  # each pass is one more forward over the same samples
        feeder.feed(acc, mine, f"MIR (outlier pass {acc.passes})")
        if world > 1:
            acc.all_reduce(group)
    result = acc.compute(sqrt=opts.sqrt)
    if baselines is not None:
        result.metadata["baselines"] = baselines.report()
    result.metadata.update(
        {
            "n_samples": len(pairs),
            "truncated_passages": _all_sum(feeder.truncated, group, world),
            "world_size": world,
        }
    )
    result.settings.update(
        {
            "template": opts.template,
            "batch_size": opts.batch_size,
            "max_text_tokens": opts.max_text_tokens,
        }
    )
    return result


def _reduce_sampler(sampler: BaselineSampler, acc: MIRAccumulator, group: Any) -> None:
    """Pool every rank's baseline samples (the accumulator knows the agreed width and dtype)."""
    from modalign.metrics.distributed import all_reduce_state
    from modalign.metrics.state import ReduceContext

    rank, world = distributed_context(group)
    all_reduce_state(sampler, ReduceContext(acc.dim, acc.dtype, rank, world), group)


def run_repeats(
    adapter: VLMAdapter,
    draw: Callable[[int, int], list[Pair]],
    n: int,
    repeats: int,
    seed: int = 0,
    options: RunOptions | None = None,
    *,
    group: Any = None,
) -> RepeatSummary:
    """MIR on `repeats` subsets `draw(n, seed + r)`; every rank must draw the same subsets."""
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    summary = RepeatSummary(n=n, seeds=[seed + r for r in range(repeats)])
    for s in summary.seeds:
        subset = draw(n, s)
        result = run_mir(adapter, subset, options, group=group)
        result.settings["seed"] = s
        summary.results.append(result)
    return summary


def init_distributed_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True if this call started it."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():  # someone else owns the group
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True
