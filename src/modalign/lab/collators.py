"""Batch builders for the four training stages (CLIP, LM, LLaVA pre-training, LLaVA SFT).

LLaVA batches are built token by token the way LlavaProcessor builds them (<image> expanded to
one id per patch); tests check they match the processor exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from modalign.lab.samples import ImageChat, ImageQA, ImageText

IGNORE = -100


def _pad(rows: Sequence[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """(B, T) tensor of rows padded with value (on the right, or left for generation)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            out[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        else:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


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
        ids = _pad([self._row(t) for t in texts], tok.pad_token_id)  # (B or 2B, T)
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
        ids = _pad(rows, tok.pad_token_id)
        mask = _pad([[1] * len(r) for r in rows], 0)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": ids.masked_fill(mask == 0, IGNORE),
        }


@dataclass
class LlavaCollator:
    """Shared LLaVA logic: image prefix ids, pixel values, padding and label masking."""

    tokenizer: PreTrainedTokenizerBase
    image_processor: object
    num_image_tokens: int
    max_text_tokens: int = 160

    def image_prefix(self, prompt: str) -> list[int]:
        """Ids of `prompt` (which contains one <image>) with <image> expanded, bos first."""
        tok = self.tokenizer
        ids = tok(prompt)["input_ids"]
        img = tok.image_token_id
        if ids.count(img) != 1:
            raise ValueError(f"prompt must contain exactly one {tok.image_token}: {prompt!r}")
        k = ids.index(img)
        return ids[:k] + [img] * self.num_image_tokens + ids[k + 1 :]

    def batch(
        self, prompts: list[list[int]], targets: list[list[int]], images: list
    ) -> dict[str, torch.Tensor]:
        """input_ids = prompt + target, labels only on target; right padding."""
        tok = self.tokenizer
        rows = [p + t[: self.max_text_tokens] for p, t in zip(prompts, targets, strict=True)]
        labels = [
            [IGNORE] * len(p) + t[: self.max_text_tokens]
            for p, t in zip(prompts, targets, strict=True)
        ]
        ids = _pad(rows, tok.pad_token_id)
        return {
            "input_ids": ids,
            "attention_mask": _pad([[1] * len(r) for r in rows], 0),
            "pixel_values": self.image_processor(images, return_tensors="pt")["pixel_values"],
            "labels": _pad(labels, IGNORE),
        }


class CaptionCollator(LlavaCollator):
    """Pre-training ('plain' template): <s><image>... caption </s>, loss on the caption."""

    def __call__(self, items: list[ImageText]) -> dict[str, torch.Tensor]:
        prefix = self.image_prefix(self.tokenizer.image_token)
        tok = self.tokenizer
        targets = [[*_text_ids(tok, it.text), tok.eos_token_id] for it in items]
        return self.batch([prefix] * len(items), targets, [it.image for it in items])


class SFTCollator(LlavaCollator):
    """SFT in the chat template: loss on the answer tokens and the closing </s> only."""

    def prompt(self, question: str) -> str:
        """USER turn with the image and question, then the generation prompt."""
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def __call__(self, items: list[ImageQA]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        prompts = [self.image_prefix(self.prompt(it.question)) for it in items]
        targets = [[*_text_ids(tok, it.answer), tok.eos_token_id] for it in items]
        return self.batch(prompts, targets, [it.image for it in items])

    def generation_batch(self, items: list[ImageQA]) -> dict[str, torch.Tensor]:
        """Left-padded prompts for batched greedy decoding."""
        rows = [self.image_prefix(self.prompt(it.question)) for it in items]
        return {
            "input_ids": _pad(rows, self.tokenizer.pad_token_id, left=True),
            "attention_mask": _pad([[1] * len(r) for r in rows], 0, left=True),
            "pixel_values": self.image_processor([it.image for it in items], return_tensors="pt")[
                "pixel_values"
            ],
        }


class ChatCollator(LlavaCollator):
    """Multi-turn SFT (LLaVA-style): all of an image's questions in one conversation.

    The conversation is rendered with the tokenizer's chat template and tokenized once; a token
    is a target iff its character span lies inside an assistant reply (answer + </s>).
    """

    def render(self, item: ImageChat) -> tuple[str, list[tuple[int, int]]]:
        """The conversation text and the character spans of the assistant replies."""
        tok = self.tokenizer
        messages: list[dict] = []
        spans = []
        for k, (question, answer) in enumerate(item.turns):
            content = [{"type": "text", "text": question}]
            if k == 0:
                content.insert(0, {"type": "image"})
            messages.append({"role": "user", "content": content})
            prefix = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            messages.append({"role": "assistant", "content": answer})
            full = tok.apply_chat_template(messages, tokenize=False)
            reply = f" {answer}{tok.eos_token}"
            if not full.startswith(prefix + reply):
                raise ValueError("chat template is not append-only; cannot locate the answers")
            spans.append((len(prefix), len(prefix) + len(reply)))
        return full.rstrip("\n"), spans

    def __call__(self, items: list[ImageChat]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        rows, labels = [], []
        for item in items:
            text, spans = self.render(item)
            enc = tok(text, return_offsets_mapping=True)
            ids, targets = [], []
            for tid, (start, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
                is_target = any(a <= start and end <= b and end > start for a, b in spans)
                n = self.num_image_tokens if tid == tok.image_token_id else 1
                ids.extend([tid] * n)
                targets.extend([tid if is_target else IGNORE] * n)
            rows.append(ids)
            labels.append(targets)
        input_ids = _pad(rows, tok.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": _pad([[1] * len(r) for r in rows], 0),
            "pixel_values": self.image_processor([it.image for it in items], return_tensors="pt")[
                "pixel_values"
            ],
            "labels": _pad(labels, IGNORE),
        }
