"""Caption loss and perplexity of any supported LVLM on image/caption pairs, through the same
adapter (templates, image expansion, masks) as MIR.

    loss = caption_loss(adapter, pairs, template="plain")   # the pre-training objective
    loss.loss, loss.perplexity, loss.tokens

The loss is the token-weighted mean next-token NLL of the passage tokens given the image and
the template around them (`plain`: BOS + image + caption, LLaVA's stage-1 layout; `chat`: the
caption as the assistant's reply). No end token is scored, so values are comparable across
families whatever their end-of-turn conventions.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from modalign.data.pairs import Pair
from modalign.errors import ConfigError, DataError
from modalign.models.adapters.base import VLMAdapter


@dataclass(frozen=True)
class CaptionLoss:
    """Mean passage-token NLL over `samples` pairs (`tokens` scored) in `template`."""

    loss: float
    tokens: int
    samples: int
    template: str

    @property
    def perplexity(self) -> float:
        """exp(loss): the per-token perplexity of the captions."""
        return math.exp(self.loss)

    def to_dict(self) -> dict[str, float | int | str]:
        return {"caption_loss": self.loss, "perplexity": self.perplexity,
                "tokens": self.tokens, "samples": self.samples, "template": self.template}  # fmt: skip


def caption_loss(
    adapter: VLMAdapter,
    pairs: Sequence[Pair],
    *,
    template: str = "plain",
    batch_size: int = 8,
    max_text_tokens: int | None = None,
    progress: bool = False,
) -> CaptionLoss:
    """Caption loss of `adapter`'s model on `pairs` (images decoded one batch at a time)."""
    from tqdm.auto import tqdm

    if not pairs:
        raise DataError("no image/caption pairs to score")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    adapter.model.eval()
    total, tokens = 0.0, 0
    bar = tqdm(total=len(pairs), desc="caption loss", unit="sample", file=sys.stderr,
               disable=not progress, leave=False)  # fmt: skip
    with bar:
        for start in range(0, len(pairs), batch_size):
            chunk = list(pairs[start : start + batch_size])  # decode this batch's images only
            batch = adapter.prepare(chunk, template=template, max_text_tokens=max_text_tokens)
            nll, n = adapter.passage_nll(batch)
            total, tokens = total + nll, tokens + n
            bar.update(len(chunk))
    return CaptionLoss(loss=total / tokens, tokens=tokens, samples=len(pairs), template=template)
