"""MIRAccumulator: the one stateful piece of the MIR math.

Feed per-layer vision and text tokens batch by batch; memory stays O(K d^2) plus one norm per
token for the exact 3-sigma rule. Typical use (see also `modalign.runner`):

    acc = MIRAccumulator(num_layers=K)
    for batch in data: acc.update(vision=[...K tensors (n_v, d)], text=[...K tensors (n_t, d)])
    if acc.needs_second_pass:            # rare: more outliers than the exact tail cache holds
        acc.begin_second_pass()
        for batch in data: acc.update(...)  # exactly the same tokens again
    result = acc.compute(sqrt="exact")
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from modalign.metrics.mir import layer_gap, mir_from_per_layer
from modalign.metrics.result import MIRResult
from modalign.metrics.tokenset import TokenSetAccumulator

__all__ = ["MIRAccumulator", "compute_mir"]

MODALITIES = ("vision", "text")


class MIRAccumulator:
    """Streaming per-layer state for MIR over any number of batches (and processes)."""

    def __init__(
        self,
        num_layers: int,
        layer_ids: Sequence[int] | None = None,
        outliers: str = "drop",
        *,
        k: float = 3.0,
        tail_capacity: int = 512,
        median_sample: int = 4096,
        seed: int = 0,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.layer_ids = list(layer_ids) if layer_ids is not None else list(range(num_layers))
        if len(self.layer_ids) != num_layers:
            raise ValueError(f"{len(self.layer_ids)} layer ids for {num_layers} layers")
        self.outliers, self.k = outliers, k
        self.tail_capacity, self.median_sample, self.seed = tail_capacity, median_sample, seed
        self.sets = {
            mod: [
                TokenSetAccumulator(
                    outliers,
                    k=k,
                    tail_capacity=tail_capacity,
                    median_sample=median_sample,
                    seed=seed * 1_000_003 + 2 * i + j,
                )
                for i in range(num_layers)
            ]
            for j, mod in enumerate(MODALITIES)
        }
        self.dim: int | None = None
        self.dtype: torch.dtype | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layer_ids)

    def _validate(self, mod: str, tokens: Sequence[torch.Tensor]) -> None:
        if len(tokens) != self.num_layers:
            raise ValueError(f"{mod}: got {len(tokens)} layers, expected {self.num_layers}")
        for lid, x in zip(self.layer_ids, tokens, strict=True):
            if not isinstance(x, torch.Tensor) or x.ndim != 2:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"layer {lid}, {mod}: expected a (n, d) tensor, got {shape}")
            if self.dim is None:
                self.dim, self.dtype = x.shape[1], x.dtype
            if x.shape[1] != self.dim:
                raise ValueError(
                    f"layer {lid}, {mod}: hidden size {x.shape[1]} differs from {self.dim}"
                )
            if x.numel() and not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).any(dim=1).sum())
                raise ValueError(
                    f"layer {lid}, {mod}: {bad} token(s) contain NaN or inf activations "
                    "(in half precision this is usually an overflow: try --dtype float32/bfloat16)"
                )

    def update(self, vision: Sequence[torch.Tensor], text: Sequence[torch.Tensor]) -> None:
        """Add one batch: per layer, vision tokens (n_v, d) and text tokens (n_t, d)."""
        self._validate("vision", vision)
        self._validate("text", text)
        for mod, tokens in (("vision", vision), ("text", text)):
            for acc, x in zip(self.sets[mod], tokens, strict=True):
                if x.shape[0]:
                    acc.update(x.detach())

    @property
    def needs_second_pass(self) -> bool:
        return any(a.needs_second_pass() for sets in self.sets.values() for a in sets)

    def begin_second_pass(self) -> None:
        """Freeze outlier bounds; the caller must then feed exactly the same tokens again."""
        for sets in self.sets.values():
            for a in sets:
                a.begin_second_pass()

    def all_reduce(self, group=None) -> None:
        """Combine the states of all processes in `group` (call once per pass, on every rank)."""
        import torch.distributed as dist

        from modalign.metrics.distributed import all_reduce_tokenset

        dims = torch.tensor([self.dim or 0])
        dist.all_reduce(dims, op=dist.ReduceOp.MAX, group=group)
        self.dim = int(dims)
        if self.dtype is None:
            self.dtype = torch.float32
        for sets in self.sets.values():
            for a in sets:
                all_reduce_tokenset(a, self.dim, self.dtype, group)

    def compute(self, sqrt: str = "exact") -> MIRResult:
        """MIR and per-layer numbers. Errors name the layer and modality at fault."""
        if self.dim is None:
            raise ValueError("no tokens were fed to the MIR accumulator")
        rows = []
        with warnings.catch_warnings():
            if sqrt == "official":
                warnings.simplefilter("ignore", UserWarning)
            for lid, va, ta in zip(
                self.layer_ids, self.sets["vision"], self.sets["text"], strict=True
            ):
                for mod, a in (("vision", va), ("text", ta)):
                    if a.n_seen == 0:
                        raise ValueError(f"layer {lid}: no {mod} tokens were fed")
                if ta.norm_sum <= 0.0:
                    raise ValueError(
                        f"layer {lid}: text tokens all have zero norm; text-centric scaling "
                        "(alpha = 1 / mean text norm) is undefined"
                    )
                alpha = ta.n_seen / ta.norm_sum
                (vm, vout), (tm, tout) = va.finalize(), ta.finalize()
                gap = layer_gap(vm, tm, alpha, sqrt=sqrt, layer=lid)
                rows.append((gap, alpha, vm.n, tm.n, vout, tout))
        if sqrt == "official":
            warnings.warn(
                "sqrt='official' reproduces the official MIR code (tr(S_v S_t) in place of the "
                "matrix square root): per-layer values are not Fréchet distances",
                UserWarning,
                stacklevel=2,
            )
        per_layer = [r[0].fd for r in rows]
        return MIRResult(
            mir=mir_from_per_layer(per_layer, sqrt=sqrt),
            per_layer=per_layer,
            layers=list(self.layer_ids),
            alpha=[r[1] for r in rows],
            n_vision=[r[2] for r in rows],
            n_text=[r[3] for r in rows],
            outliers_vision=[r[4] for r in rows],
            outliers_text=[r[5] for r in rows],
            centroid_gap=[r[0].centroid for r in rows],
            cosine_gap=[r[0].cosine for r in rows],
            settings={
                "sqrt": sqrt,
                "outliers": self.outliers,
                "outlier_k": self.k,
                "scaling": "text-centric (alpha = 1 / mean text-token norm, before outliers)",
                "covariance": "unbiased (n - 1)",
                "tail_capacity": self.tail_capacity,
                "median_sample": self.median_sample,
            },
        )


def compute_mir(
    vision: Sequence[torch.Tensor],
    text: Sequence[torch.Tensor],
    *,
    layer_ids: Sequence[int] | None = None,
    outliers: str = "drop",
    sqrt: str = "exact",
    **kwargs,
) -> MIRResult:
    """MIR of in-memory per-layer token sets (lists of (n_v, d) and (n_t, d) tensors)."""
    acc = MIRAccumulator(len(vision), layer_ids=layer_ids, outliers=outliers, **kwargs)
    acc.update(vision, text)
    if acc.needs_second_pass:
        acc.begin_second_pass()
        acc.update(vision, text)
    return acc.compute(sqrt=sqrt)
