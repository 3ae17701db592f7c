"""Batch builders of the towers' pre-training (tiny CLIP, tiny LM). LLaVA batches are built by
the training path's collators (`modalign.models.collate`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from modalign.models import pad_sequences
from modalign_lab.world.samples import ImageText

IGNORE = -100


def _text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of text without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class ClipCollator:
    """pixel_values + <s> caption </s> ids (truncated, eos kept) for CLIPModel.

    Without hard negatives the batch asks CLIPModel for its own loss (return_loss). With them
    (every item has `negative`), the B negative captions follow the B positives in input_ids
    (2B rows) and `labels` = arange(B) feeds `negclip_loss`, which scores each image against
    all 2B captions.
    """

    tokenizer: PreTrainedTokenizerBase
    image_processor: object
    max_tokens: int

    def _row(self, text: str) -> list[int]:
        tok = self.tokenizer
        return [tok.bos_token_id, *_text_ids(tok, text)[: self.max_tokens - 2], tok.eos_token_id]

    def __call__(self, items: list[ImageText]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        negatives = [it.negative for it in items]
        if any(n is not None for n in negatives) and any(n is None for n in negatives):
            raise ValueError("a CLIP batch must have a hard negative for every item or for none")
        texts = [it.text for it in items]
        if negatives[0] is not None:
            texts += negatives
        ids = pad_sequences([self._row(t) for t in texts], tok.pad_token_id)  # (B or 2B, T)
        pixels = self.image_processor([it.image for it in items], return_tensors="pt")[
            "pixel_values"
        ]
        batch = {
            "input_ids": ids,
            "attention_mask": (ids != tok.pad_token_id).long(),
            "pixel_values": pixels,
        }
        if negatives[0] is None:
            batch["return_loss"] = True
        else:
            batch["labels"] = torch.arange(len(items))
        return batch


@dataclass
class LMCollator:
    """Causal-LM batches from packed blocks (tensors) or from lines (padded, pad ignored)."""

    tokenizer: PreTrainedTokenizerBase
    max_tokens: int

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        if all(isinstance(x, torch.Tensor) for x in items):
            ids = torch.stack(items)  # (B, L)
            return {"input_ids": ids, "labels": ids.clone()}
        tok = self.tokenizer
        rows = [
            [tok.bos_token_id, *_text_ids(tok, s)[: self.max_tokens - 2], tok.eos_token_id]
            for s in items
        ]
        ids = pad_sequences(rows, tok.pad_token_id)
        mask = pad_sequences([[1] * len(r) for r in rows], 0)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": ids.masked_fill(mask == 0, IGNORE),
        }
