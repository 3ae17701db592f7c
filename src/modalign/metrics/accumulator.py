"""MIRAccumulator: the stateful piece of the MIR math, and `compute_mir` for in-memory tokens.

Feed per-layer vision and text tokens batch by batch; memory stays O(K d^2) plus one norm per
token for the exact 3-sigma rule (plus, in `median` mode, the median's sample and bracket; see
`modalign.metrics.median`). Outlier handling may need the same tokens fed again, so the
accumulator runs its own passes: give it a function that feeds one whole pass.

    acc = MIRAccumulator(num_layers=K)
    def feed(acc):               # every batch: acc.update(vision=[K x (n_v, d)], text=[K x (n_t, d)])
        for vision, text in batches():
            acc.update(vision, text)
    result = acc.accumulate(feed, sqrt="exact")   # distributed=True: all-reduce after each pass

A further pass happens only when more outliers exist than the exact tail cache holds, or in
`median` mode to find the exact per-dimension median (one pass normally, two at most; both share
one re-feed). `update` / `needs_another_pass` / `begin_next_pass` / `all_reduce` / `compute` are
the steps `accumulate` takes, for callers that must drive them one by one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from modalign.errors import ConfigError, MetricError
from modalign.metrics.median import MEDIAN_MODES
from modalign.metrics.mir import layer_gap, mir_from_per_layer
from modalign.metrics.result import MIRResult
from modalign.metrics.sqrt_backends import SqrtBackend, sqrt_backend
from modalign.metrics.state import ReduceContext
from modalign.metrics.tokenset import TokenSetAccumulator

__all__ = ["MIRAccumulator", "compute_mir"]

MODALITIES = ("vision", "text")
SCALING = "text-centric (alpha = 1 / mean text-token norm, before outliers)"
COVARIANCE = "unbiased (n - 1)"
MAX_PASSES = 4  # the protocol needs 3 at most (tail overflow, median bracket, bracket miss)


class MIRAccumulator:
    """Streaming per-layer state for MIR over any number of batches, passes and processes.

    MIR (lower is better aligned) is log10 of the summed per-layer Fréchet distances between
    the vision and the text tokens after text-centric scaling and 3-sigma norm outlier handling.

    Args:
        num_layers: K, the number of layers fed per batch.
        layer_ids: a label per layer (default 0..K-1), recorded in the result.
        outliers: `drop` (remove outlier tokens), `median` (replace them by the per-dimension
            lower median of all tokens, as the official code does) or `none`.
        k: the outlier rule's k: tokens with | ||f|| - median ||f|| | > k std ||f|| are outliers.
        tail_capacity: tokens kept exactly at each end of the norm range; more outliers than
            this cost one more pass over the data.
        median: `exact` (default: the exact median, which may cost one more pass, two at
            most) or `estimate` (the lower median of a seeded sample of `median_sample` tokens:
            exact up to that many tokens, an estimate beyond, never an extra pass).
        median_sample: size of that sample; also the source of the exact median's bracket.
        seed: seed of the samples.

    Example (`accumulate` runs the passes; see the module docstring):

        >>> g = torch.Generator().manual_seed(0)
        >>> vision = [torch.randn(200, 4, generator=g) + 2.0]
        >>> text = [torch.randn(100, 4, generator=g)]
        >>> acc = MIRAccumulator(1, outliers="median")
        >>> result = acc.accumulate(lambda a: a.update(vision, text))
        >>> round(result.mir, 4), result.settings["passes"]
        (0.7166, 1)
    """

    def __init__(
        self,
        num_layers: int,
        layer_ids: Sequence[int] | None = None,
        outliers: str = "drop",
        *,
        k: float = 3.0,
        tail_capacity: int = 512,
        median: str = "exact",
        median_sample: int = 4096,
        seed: int = 0,
    ) -> None:
        if num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
        self.layer_ids = list(layer_ids) if layer_ids is not None else list(range(num_layers))
        if len(self.layer_ids) != num_layers:
            raise ConfigError(f"{len(self.layer_ids)} layer ids for {num_layers} layers")
        if median not in MEDIAN_MODES:
            raise ConfigError(f"median must be one of {MEDIAN_MODES}, got {median!r}")
        self.outliers, self.k, self.median = outliers, k, median
        self.tail_capacity, self.median_sample, self.seed = tail_capacity, median_sample, seed
        self.sets = {
            mod: [
                TokenSetAccumulator(
                    outliers,
                    k=k,
                    tail_capacity=tail_capacity,
                    median=median,
                    median_sample=median_sample,
                    seed=seed * 1_000_003 + 2 * i + j,
                )
                for i in range(num_layers)
            ]
            for j, mod in enumerate(MODALITIES)
        }
        self.dim: int | None = None
        self.dtype: torch.dtype | None = None
        self.pass_index = 0  # 0 = the first pass over the data
        self._reduced_pass = -1  # the last pass all-reduced

    @property
    def num_layers(self) -> int:
        return len(self.layer_ids)

    def _validate(self, mod: str, tokens: Sequence[torch.Tensor]) -> None:
        if len(tokens) != self.num_layers:
            raise MetricError(f"{mod}: got {len(tokens)} layers, expected {self.num_layers}")
        for lid, x in zip(self.layer_ids, tokens, strict=True):
            if not isinstance(x, torch.Tensor) or x.ndim != 2:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise MetricError(f"layer {lid}, {mod}: expected a (n, d) tensor, got {shape}")
            if self.dim is None:
                self.dim, self.dtype = x.shape[1], x.dtype
            if x.shape[1] != self.dim:
                raise MetricError(
                    f"layer {lid}, {mod}: hidden size {x.shape[1]} differs from {self.dim}"
                )
            if x.numel() and not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).any(dim=1).sum())
                raise MetricError(
                    f"layer {lid}, {mod}: {bad} token(s) contain NaN or inf activations "
                    "(in half precision this is usually an overflow: try --dtype float32/bfloat16)"
                )

    def _all_sets(self) -> list[TokenSetAccumulator]:
        return [a for sets in self.sets.values() for a in sets]

    def update(self, vision: Sequence[torch.Tensor], text: Sequence[torch.Tensor]) -> None:
        """Add one batch: per layer, vision tokens (n_v, d) and text tokens (n_t, d)."""
        if self._reduced_pass == self.pass_index:
            raise RuntimeError("this pass was all-reduced already: begin the next pass first")
        self._validate("vision", vision)
        self._validate("text", text)
        for mod, tokens in (("vision", vision), ("text", text)):
            for acc, x in zip(self.sets[mod], tokens, strict=True):
                if x.shape[0]:
                    acc.update(x.detach())

    @property
    def passes(self) -> int:
        """Passes over the data begun so far (1 during and after the first)."""
        return self.pass_index + 1

    @property
    def needs_another_pass(self) -> bool:
        """True when the tokens fed so far must be fed once more (after `begin_next_pass`).

        Ask after feeding a whole pass (and, under torch.distributed, after `all_reduce`, so
        that every rank gets the same answer).
        """
        return any(a.needs_another_pass() for a in self._all_sets())

    def begin_next_pass(self) -> None:
        """Plan the next pass from what the last one found; then feed exactly the same tokens."""
        if not self.needs_another_pass:
            raise RuntimeError("no further pass is needed: call compute()")
        for a in self._all_sets():
            a.begin_next_pass()
        self.pass_index += 1

    def all_reduce(self, group=None) -> None:
        """Combine the states of all processes in `group`: call once after every pass, on every
        rank. Reduces the states each token set declares for the current pass."""
        from modalign.metrics.distributed import agree_rows, all_reduce_state

        if self._reduced_pass == self.pass_index:
            raise RuntimeError(f"pass {self.passes} was all-reduced already")
        sets = self._all_sets()
        self.dim, dtypes, rank, world = agree_rows(self.dim, [a.dtype for a in sets], group)
        if self.dtype is None:
            self.dtype = next((t for t in dtypes if t is not None), torch.float32)
        for a, dtype in zip(sets, dtypes, strict=True):
            a.dim, a.dtype = self.dim, dtype or self.dtype  # also a rank that saw none
            all_reduce_state(a, ReduceContext(self.dim, a.dtype, rank, world), group)
        self._reduced_pass = self.pass_index

    def accumulate(
        self,
        feed: Callable[[MIRAccumulator], None],
        *,
        sqrt: str | SqrtBackend = "exact",
        settings: Mapping[str, Any] | None = None,
        distributed: bool = False,
        group: Any = None,
    ) -> MIRResult:
        """Run every pass the data needs and return the result: `feed(self)` feeds one whole pass
        (the same tokens each time; it may read `self.pass_index`, 0 on the first pass).

        Args:
            feed: feeds one whole pass through `update`.
            sqrt: the trace-square-root backend or its name (`SQRT_BACKENDS`).
            settings: the caller's run settings, recorded with the accumulator's own (`compute`).
            distributed: all-reduce over `group` after every pass (every rank calls this, each
                feeding its own shard); then every rank returns the same result.
            group: the torch.distributed process group (None: the default group).

        Returns:
            The `MIRResult`.
        """
        if self.dim is not None or self.pass_index:
            raise RuntimeError("accumulate() runs every pass itself: start from a new accumulator")
        while True:
            feed(self)
            if distributed:
                self.all_reduce(group)
            if not self.needs_another_pass:
                return self.compute(sqrt, settings=settings)
            if self.passes >= MAX_PASSES:
                raise RuntimeError(f"still no result after {self.passes} passes (a bug)")
            self.begin_next_pass()

    def record(self, sqrt: str | SqrtBackend = "exact") -> dict[str, Any]:
        """The accumulator's settings (its math constants and the passes it took), as recorded in
        `MIRResult.settings`."""
        return {
            "sqrt": sqrt_backend(sqrt).name,
            "outliers": self.outliers,
            "outlier_k": self.k,
            "scaling": SCALING,
            "covariance": COVARIANCE,
            "tail_capacity": self.tail_capacity,
            "median": self.median,
            "median_sample": self.median_sample,
            "passes": self.passes,
        }

    def compute(
        self, sqrt: str | SqrtBackend = "exact", *, settings: Mapping[str, Any] | None = None
    ) -> MIRResult:
        """MIR and per-layer numbers. Errors name the layer and modality at fault.

        `settings`: the caller's run settings; the result's `settings` is written once, here:
        the accumulator's `record` and these (a key in both must agree).
        """
        backend = sqrt_backend(sqrt)
        record = self.record(backend)
        clash = sorted(k for k in settings or {} if k in record and settings[k] != record[k])
        if clash:
            raise ValueError(f"run settings disagree with the accumulator's on {', '.join(clash)}")
        if self.dim is None:
            raise MetricError("no tokens were fed to the MIR accumulator")
        rows = []
        with warnings.catch_warnings():
            if backend.caveat:  # warned once below, not once per layer
                warnings.simplefilter("ignore", UserWarning)
            for lid, va, ta in zip(
                self.layer_ids, self.sets["vision"], self.sets["text"], strict=True
            ):
                for mod, a in (("vision", va), ("text", ta)):
                    if a.n_seen == 0:
                        raise MetricError(f"layer {lid}: no {mod} tokens were fed")
                if ta.norm_sum <= 0.0:
                    raise MetricError(
                        f"layer {lid}: text tokens all have zero norm; text-centric scaling "
                        "(alpha = 1 / mean text norm) is undefined"
                    )
                alpha = ta.n_seen / ta.norm_sum
                (vm, vout), (tm, tout) = va.finalize(), ta.finalize()
                gap = layer_gap(vm, tm, alpha, sqrt=backend, layer=lid)
                rows.append((gap, alpha, vm.n, tm.n, vout, tout))
        backend.warn("per-layer values are not Fréchet distances", stacklevel=2)
        per_layer = [r[0].fd for r in rows]
        return MIRResult(
            mir=mir_from_per_layer(per_layer, sqrt=backend),
            per_layer=per_layer,
            layers=list(self.layer_ids),
            alpha=[r[1] for r in rows],
            n_vision=[r[2] for r in rows],
            n_text=[r[3] for r in rows],
            outliers_vision=[r[4] for r in rows],
            outliers_text=[r[5] for r in rows],
            centroid_gap=[r[0].centroid for r in rows],
            cosine_gap=[r[0].cosine for r in rows],
            settings={**record, **(settings or {})},
        )


def compute_mir(
    vision: Sequence[torch.Tensor],
    text: Sequence[torch.Tensor],
    *,
    layer_ids: Sequence[int] | None = None,
    outliers: str = "drop",
    sqrt: str | SqrtBackend = "exact",
    median: str = "exact",
    settings: Mapping[str, Any] | None = None,
    **kwargs,
) -> MIRResult:
    """MIR of in-memory per-layer token sets; lower is better aligned.

    Args:
        vision: per layer, the vision tokens (n_v, d).
        text: per layer, the text tokens (n_t, d).
        layer_ids: a label per layer (default 0..K-1).
        outliers: `drop`, `median` or `none` (see `MIRAccumulator`).
        sqrt: trace-square-root backend or its name (`SQRT_BACKENDS`); `official` with
            `outliers="median"` reproduces the official code (`--compat official`).
        median: `exact` (default) or `estimate` (see `MIRAccumulator`).
        settings: the caller's run settings, recorded beside the accumulator's.
        **kwargs: further `MIRAccumulator` options (k, tail_capacity, median_sample, seed).

    Returns:
        The `MIRResult` (MIR, per-layer distances, counts, settings).

    >>> g = torch.Generator().manual_seed(0)
    >>> vision = [torch.randn(300, 4, generator=g) + 1.0 for _ in range(2)]
    >>> text = [torch.randn(200, 4, generator=g) for _ in range(2)]
    >>> result = compute_mir(vision, text)
    >>> result.layers, round(result.mir, 3)
    ([0, 1], 0.402)
    """
    acc = MIRAccumulator(
        len(vision), layer_ids=layer_ids, outliers=outliers, median=median, **kwargs
    )
    return acc.accumulate(lambda a: a.update(vision, text), sqrt=sqrt, settings=settings)
