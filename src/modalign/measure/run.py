"""Stream image/text pairs through a model adapter into the MIR accumulators.

    result = run_mir(adapter, pairs, MIRSettings(batch_size=8, template="chat"))
    summary = run_repeats(adapter, draw=source.sample, settings=MIRSettings(n=100, repeats=10))

Memory does not grow with the number of samples: each batch's hidden states are reduced to
the accumulators' sums and dropped. Under torch.distributed each rank scores a strided shard
(`pairs[rank::world]`, no duplicates, no padding) and the accumulator states are all-reduced.
The settings are resolved once, up front, and recorded once in the result.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from modalign.data.pairs import Pair
from modalign.errors import DataError, MetricError
from modalign.measure.settings import MIRSettings
from modalign.metrics import MIRAccumulator, MIRResult
from modalign.metrics.baseline_sampler import BaselineSampler
from modalign.models.adapters.base import VLMAdapter
from modalign.models.adapters.states import LayerStates, ModelBatch

# The former name of the run settings (the lab and older scripts build `RunOptions(...)`).
RunOptions = MIRSettings
# baselines whose spread over repeats is reported (one number per run)
SPREAD_BASELINES = ("mmd", "mmd_layerwise", "kid", "kid_layerwise")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, min, max and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    std = (
        math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))
        if len(values) > 1
        else 0.0
    )
    return {"mean": mean, "min": min(values), "max": max(values), "std": std}


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
        """Mean, min, max, sample std and the per-repeat values (for JSON metadata); with
        baselines, their per-repeat values and spread under "baselines"."""
        v = self.values
        out = {"n": self.n, "repeats": len(v), "seeds": self.seeds, "mir": v, **spread(v)}
        reports = [r.metadata.get("baselines") for r in self.results]
        if reports and all(reports):
            out["baselines"] = {
                key: {"values": [b[key] for b in reports], **spread([b[key] for b in reports])}
                for key in SPREAD_BASELINES
            }
        return out


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
    """Runs the adapter over a shard and feeds the accumulator, one whole pass per call (the
    baselines' sampler sees the first pass); counts truncated passages."""

    def __init__(
        self,
        adapter: VLMAdapter,
        settings: MIRSettings,
        layer_ids: list[int],
        pairs: Sequence[Pair],
        sampler: BaselineSampler | None,
    ) -> None:
        self.adapter, self.settings, self.layer_ids = adapter, settings, layer_ids
        self.pairs, self.sampler = pairs, sampler
        self.truncated = 0

    def __call__(self, acc: MIRAccumulator) -> None:
        from tqdm.auto import tqdm

        first = acc.pass_index == 0
        sampler = self.sampler if first else None  # the same forward passes as the first pass
        desc = "MIR" if first else f"MIR (outlier pass {acc.passes})"
        self.truncated = 0
        bar = tqdm(total=len(self.pairs), desc=desc, unit="sample", file=sys.stderr,
                   disable=not self.settings.progress, leave=False)  # fmt: skip
        with bar:
            for lazy_chunk in _batches(self.pairs, self.settings.batch_size):
                chunk = list(lazy_chunk)  # decode this batch's images only
                batch = self.adapter.prepare(
                    chunk,
                    template=self.settings.template,
                    max_text_tokens=self.settings.max_text_tokens,
                )
                states = self.adapter.forward(batch, layers=self.layer_ids)
                vision, text = states.tokens()
                try:
                    acc.update(vision=vision, text=text)
                except MetricError as exc:
                    located = locate_nonfinite(states, batch)
                    raise (located or exc) from exc
                if sampler is not None:
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
    settings: MIRSettings | None = None,
    *,
    group: Any = None,
) -> MIRResult:
    """MIR of `adapter`'s model over `pairs`; sharded across ranks when torch.distributed is up.

    `settings` (default `MIRSettings()`) are resolved here, with `n` the number of pairs and the
    device and dtype the adapter's, and recorded once in `result.settings`. With
    `settings.baselines`, a `BaselineSampler` is fed in the first pass (same forward passes)
    and its report goes to `result.metadata["baselines"]`.
    """
    if not pairs:
        raise DataError("no image/text pairs to score")
    settings = (settings or MIRSettings()).resolve(
        n=len(pairs),
        device=str(adapter.device),
        dtype=str(adapter.dtype).removeprefix("torch."),
    )
    layer_ids = adapter.layer_ids(settings.layers)
    rank, world = distributed_context(group)
    acc = MIRAccumulator(
        len(layer_ids), layer_ids=layer_ids, outliers=settings.outliers, median=settings.median
    )
    sampler = None
    if settings.baselines:
        sampler = BaselineSampler(len(layer_ids), settings.baseline_tokens, seed=settings.seed)
    feed = _Feeder(adapter, settings, layer_ids, shard(pairs, rank, world), sampler)
    result = acc.accumulate(
        feed,
        sqrt=settings.backend,
        settings=settings.record(),
        distributed=world > 1,
        group=group,
    )
    if sampler is not None:
        if world > 1:
            _reduce_sampler(sampler, acc, group)
        result.metadata["baselines"] = sampler.report()
    result.metadata.update(
        {
            "n_samples": len(pairs),
            "truncated_passages": _all_sum(feed.truncated, group, world),
            "world_size": world,
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
    draw: Callable[[int, int], Sequence[Pair]],
    settings: MIRSettings,
    *,
    group: Any = None,
) -> RepeatSummary:
    """MIR on `settings.repeats` subsets `draw(settings.n, seed)`, seed = settings.seed + r
    (each result records its own seed; with baselines, each subset has its own); every rank
    must draw the same subsets."""
    summary = RepeatSummary(
        n=settings.n, seeds=[settings.seed + r for r in range(settings.repeats)]
    )
    for seed in summary.seeds:
        subset = draw(settings.n, seed)
        summary.results.append(
            run_mir(adapter, subset, dataclasses.replace(settings, seed=seed), group=group)
        )
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
