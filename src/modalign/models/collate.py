"""Batches for LLaVA-style training: the `plain` template (pre-training) and the chat template (SFT).

Both expand the image placeholder into the processor's number of image tokens, give the loss only
to what the model must produce (the caption; the assistant replies), pad on the right and add the
image tensors. `plain` is LLaVA's `preprocess_plain`: BOS + image + caption + end, where end is
"\\n" (LLaVA's `conv_llava_plain.sep`) or the EOS token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image

from modalign.data.conversations import Sample
from modalign.data.images import pixel_values_of
from modalign.errors import DataError, ModelError
from modalign.models.sequence import overlapping_span, pad_sequences

IGNORE = -100  # label of positions without loss (transformers' ignore_index)


# Non-tensor batch entries a collator can add for objectives (`LlavaCollator.extras`).
EXTRAS = {
    "image_paths": lambda s: str(s.conversation.image),
    "captions": lambda s: s.conversation.caption,
}


def image_token_count(processor: Any) -> int:
    """How many tokens the processor expands one image into (asked of the processor itself)."""
    crop = getattr(processor.image_processor, "crop_size", None) or {}
    side = crop.get("height", 224) if isinstance(crop, dict) else getattr(crop, "height", 224)
    probe = processor(
        text=[processor.image_token], images=[Image.new("RGB", (side, side))], return_tensors="pt"
    )
    n = int((probe["input_ids"] == _image_token_id(processor)).sum())
    if n < 1:
        raise ModelError("the processor did not expand the image placeholder into image tokens")
    return n


def _image_token_id(processor: Any) -> int:
    return int(processor.tokenizer.convert_tokens_to_ids(processor.image_token))


@dataclass
class LlavaCollator:
    """What both templates share: image expansion, labels, padding, truncation, pixel values.

    `connector_text`: also return the first human turn's tokens as `connector_input_ids` (for an
    instruction-aware Q-Former connector). `extras`: also return `image_paths` (str per
    sample) and/or `captions` (the first assistant reply per sample) for objectives.
    """

    processor: Any
    max_length: int | None = None
    connector_text: bool = False
    extras: tuple[str, ...] = ()  # non-tensor entries objectives read: image_paths, captions
    tokenizer: Any = field(init=False)
    image_token_id: int = field(init=False)
    num_image_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokenizer = self.processor.tokenizer
        self.image_token_id = _image_token_id(self.processor)
        self.num_image_tokens = image_token_count(self.processor)
        if self.tokenizer.pad_token_id is None:
            raise ModelError("the tokenizer has no pad token; set one before training")

    def _expand(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        """Each image placeholder id becomes num_image_tokens copies (never a target)."""
        out_ids, out_labels = [], []
        for tid, lab in zip(ids, labels, strict=True):
            n = self.num_image_tokens if tid == self.image_token_id else 1
            out_ids.extend([tid] * n)
            out_labels.extend([IGNORE if n > 1 or tid == self.image_token_id else lab] * n)
        return out_ids, out_labels

    def _truncate(self, ids: list[int], labels: list[int], sid: str) -> tuple[list[int], list[int]]:
        if self.max_length is None or len(ids) <= self.max_length:
            return ids, labels
        if self.image_token_id in ids[self.max_length :]:
            raise DataError(
                f"sample {sid}: {len(ids)} tokens exceed max_length={self.max_length} and the cut "
                "would fall inside the image tokens"
            )
        return ids[: self.max_length], labels[: self.max_length]

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, C, H, W) image tensor (see `pixel_values_of`)."""
        return pixel_values_of(self.processor, images)

    def batch(self, samples: Sequence[Sample], rows: list[tuple[list[int], list[int]]]) -> dict:
        """Pad the expanded rows and add images (and the instruction ids if asked)."""
        expanded = [
            self._truncate(*self._expand(ids, labels), s.conversation.id)
            for s, (ids, labels) in zip(samples, rows, strict=True)
        ]
        ids = [r[0] for r in expanded]
        out = {
            "input_ids": pad_sequences(ids, self.tokenizer.pad_token_id),  # (B, T)
            "attention_mask": pad_sequences([[1] * len(r) for r in ids], 0),  # (B, T)
            "labels": pad_sequences([r[1] for r in expanded], IGNORE),  # (B, T)
        }
        images = [s.image for s in samples]
        if any(img is None for img in images):
            if not all(img is None for img in images):
                raise DataError("a batch mixes samples with and without images")
        else:
            out["pixel_values"] = self.pixel_values(images)
        unknown = set(self.extras) - set(EXTRAS)
        if unknown:
            raise ModelError(f"collator extras {sorted(unknown)} unknown; known: {sorted(EXTRAS)}")
        for key in self.extras:
            out[key] = [EXTRAS[key](s) for s in samples]
        if self.connector_text:
            text = [self.tokenizer(s.conversation.turns[0][0], add_special_tokens=False)["input_ids"]
                    for s in samples]  # fmt: skip
            if any(text):
                out["connector_input_ids"] = pad_sequences(text, self.tokenizer.pad_token_id)
                out["connector_attention_mask"] = pad_sequences([[1] * len(t) for t in text], 0)
        return out


@dataclass
class PlainCollator(LlavaCollator):
    """Pre-training: BOS + <image> + caption + end; loss on the caption and end only."""

    template: ClassVar[str] = "plain"

    end: str = "\n"  # LLaVA's plain separator; "eos" appends the EOS token instead

    def _row(self, sample: Sample) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        head = tok(self.processor.image_token)[
            "input_ids"
        ]  # BOS (if the tokenizer adds one) + image
        if head.count(self.image_token_id) != 1:
            raise ModelError(f"{self.processor.image_token!r} must tokenize to one image token")
        caption = sample.conversation.caption
        if self.end == "eos":
            body = [*tok(caption, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        else:
            body = tok(caption + self.end, add_special_tokens=False)["input_ids"]
        return head + body, [IGNORE] * len(head) + body

    def __call__(self, samples: Sequence[Sample]) -> dict:
        if any(s.image is None for s in samples):
            raise DataError("the plain (pre-training) template needs an image in every sample")
        return self.batch(samples, [self._row(s) for s in samples])


@dataclass
class ChatCollator(LlavaCollator):
    """SFT: the conversation in the model's chat template; loss on the assistant replies only.

    Each reply's characters are found by rendering the conversation up to the reply's prompt and
    up to the reply itself (the template must be append-only); tokens overlapping a reply (its
    text, the end-of-turn token) are targets.
    """

    template: ClassVar[str] = "chat"

    def messages(self, sample: Sample, upto: int | None = None) -> list[dict]:
        """Chat messages of the first `upto` turns (all by default); the image opens turn 0."""
        out: list[dict] = []
        for k, (question, answer) in enumerate(sample.conversation.turns[:upto]):
            content: list[dict] = [{"type": "text", "text": question}]
            if k == 0 and sample.image is not None:
                content.insert(0, {"type": "image"})
            out.append({"role": "user", "content": content})
            out.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return out

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        template_owner = (
            self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        )
        if not getattr(template_owner, "chat_template", None):
            raise ModelError("the processor has no chat template; SFT needs one")
        return template_owner.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _spans(self, sample: Sample) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of the assistant replies."""
        msgs = self.messages(sample)
        full = self.render(msgs).rstrip()  # nothing to learn after the last reply
        spans = []
        for k in range(len(sample.conversation.turns)):
            prompt = self.render(msgs[: 2 * k + 1], generation_prompt=True)
            upto = self.render(msgs[: 2 * k + 2])
            if not (upto.startswith(prompt) and full.startswith(upto.rstrip())):
                raise ModelError("the chat template is not append-only; cannot locate the replies")
            spans.append((len(prompt), len(upto.rstrip())))  # not the newline after the turn
        return full, spans

    def _encode(self, text: str) -> dict:
        bos = self.tokenizer.bos_token
        special = not (bos and text.startswith(bos))  # as apply_chat_template(tokenize=True)
        return self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)

    def _row(self, sample: Sample) -> tuple[list[int], list[int]]:
        text, spans = self._spans(sample)
        enc = self._encode(text)
        ids = list(enc["input_ids"])
        labels = [IGNORE] * len(ids)
        for a, b in spans:
            s, e = overlapping_span(enc["offset_mapping"], a, b)
            labels[s:e] = ids[s:e]
        if all(lab == IGNORE for lab in labels):
            raise DataError(f"sample {sample.conversation.id}: no assistant tokens to learn")
        return ids, labels

    def __call__(self, samples: Sequence[Sample]) -> dict:
        return self.batch(samples, [self._row(s) for s in samples])

    def generation_batch(self, samples: Sequence[Sample]) -> dict:
        """Left-padded prompts (image + first question + generation prompt) for greedy decoding."""
        rows = []
        for s in samples:
            enc = self._encode(self.render(self.messages(s, upto=1)[:1], generation_prompt=True))
            ids, _ = self._expand(list(enc["input_ids"]), list(enc["input_ids"]))
            rows.append(ids)
        out = {
            "input_ids": pad_sequences(rows, self.tokenizer.pad_token_id, "left"),
            "attention_mask": pad_sequences([[1] * len(r) for r in rows], 0, "left"),
        }
        if all(s.image is not None for s in samples):
            out["pixel_values"] = self.pixel_values([s.image for s in samples])
        return out


def collator_class(template: str) -> type[LlavaCollator]:
    """The collator of a training template (`models.templates`): the subclass whose `template`
    it is; ConfigError for a template that does not train."""
    from modalign.data.templates import training_templates
    from modalign.errors import ConfigError

    if template not in training_templates():
        raise ConfigError(f"template must be one of {list(training_templates())}, got {template!r}")
    return next(
        c for c in LlavaCollator.__subclasses__() if getattr(c, "template", None) == template
    )
