"""Caption loss through the adapters: batched (padded) values equal a per-sample float64
reference, for every family; the reference for LLaVA is built without the adapter's masks."""

from __future__ import annotations

import math

import pytest
import torch

from modalign.errors import DataError
from modalign.evidence.caption_loss import caption_loss
from tests.models.conftest import FAMILIES, make_pairs


def _reference_llava(adapter, pairs) -> tuple[float, int]:
    """BOS + image tokens from the processor, then the passage's own ids; NLL in float64."""
    tok, model = adapter.tokenizer, adapter.model
    total, count = 0.0, 0
    for p in pairs:
        head = adapter.processor(images=[p.image], text=adapter.processor.image_token,
                                 return_tensors="pt")  # fmt: skip
        own = tok(p.text, add_special_tokens=False)["input_ids"]
        ids = torch.cat([head["input_ids"][0], torch.tensor(own)])[None]  # (1, T)
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values=head["pixel_values"]).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)  # (T, V)
        start = head["input_ids"].shape[1]
        for k, t in enumerate(own):
            total -= float(logp[start + k - 1, t])
            count += 1
    return total / count, count


def test_llava_matches_an_independent_reference(tiny_adapter):
    adapter = tiny_adapter("llava")
    pairs = make_pairs(6)
    got = caption_loss(adapter, pairs, template="plain", batch_size=4)
    want, tokens = _reference_llava(adapter, pairs)
    assert got.tokens == tokens and got.samples == 6
    assert got.loss == pytest.approx(want, rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(want), rel=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("template", ["plain", "chat"])
def test_padding_does_not_change_the_loss(family, template, tiny_adapter):
    """A batch of mixed lengths scores each passage as it would alone."""
    adapter = tiny_adapter(family)
    pairs = make_pairs(5)
    batched = caption_loss(adapter, pairs, template=template, batch_size=5)
    singles = [caption_loss(adapter, [p], template=template) for p in pairs]
    total = sum(s.loss * s.tokens for s in singles)
    assert batched.tokens == sum(s.tokens for s in singles)
    assert batched.loss == pytest.approx(total / batched.tokens, rel=1e-4)
    assert math.isfinite(batched.loss) and batched.loss > 0


def test_trained_vs_random_passages_differ(tiny_adapter):
    """The loss reads the passage: repeating one token is easier than varied text."""
    from modalign.data import Pair

    adapter = tiny_adapter("llava")
    image = make_pairs(1)[0].image
    a = caption_loss(adapter, [Pair(image, "x", "a " * 30, 0)])
    b = caption_loss(adapter, [Pair(image, "x", "The quick brown fox jumps over the dog.", 0)])
    assert a.loss != pytest.approx(b.loss, rel=1e-3)


def test_no_pairs_is_an_error(tiny_adapter):
    with pytest.raises(DataError, match="no image/caption pairs"):
        caption_loss(tiny_adapter("llava"), [])
