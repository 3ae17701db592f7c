"""The adapter interface: (model, processor, image/text pairs) -> per-layer states and masks.

Sequence templates (`prepare(..., template=...)`):
- `chat` (default): the model's own chat template; the user turn holds the image, the passage
  is the assistant turn. Tokenized as one string by the processor, exactly as the model sees it;
  the passage's tokens are found with the tokenizer's offset mapping.
- `plain`: BOS (if the tokenizer adds one) + the image's tokens as the processor expands them +
  `tokenizer(passage, add_special_tokens=False)`, concatenated as token ids.
- `official`: the official MIR protocol: LLaVA's vicuna_v1 conversation with the passage as the
  assistant turn; "text" = every token after the image (template tokens included).
Passages are stripped of surrounding whitespace first (chat templates often trim them).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from modalign.data.pairs import Pair
from modalign.data.templates import measuring_templates
from modalign.errors import ConfigError, DataError, MetricError, ModelError
from modalign.models.adapters.describe import describe_sample
from modalign.models.adapters.states import LayerStates, ModelBatch
from modalign.models.sequence import VICUNA_V1_SYSTEM, RowSpec, cut_text, overlapping_span, pad_rows

# Sequence templates (`models.templates`); `prepare` builds each row with the adapter's
# `_{template}_row` method, which a family adapter overrides where its layout differs (e.g.
# PaliGemma's `_chat_row`).
TEMPLATES = measuring_templates()

# Stands in for the passage when locating the assistant turn in a chat template.
_SENTINEL = "\ue000modalign-passage\ue001"

# Keys the processor returns that must not reach the model's forward.
_DROP_KEYS = ("labels", "offset_mapping")


class VLMAdapter:
    """Adapter for decoder-only LVLMs that put expanded image tokens into the token sequence."""

    family: ClassVar[str] = "generic"
    tail_token_type: ClassVar[int] = 0  # token_type_ids of tokens appended after the processor's

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ModelError(
                f"{type(processor).__name__} has no tokenizer; pass the model's processor"
            )
        config = model.config
        token_id = getattr(config, "image_token_id", None)
        if token_id is None:
            token_id = getattr(config, "image_token_index", None)
        if token_id is None:
            raise ModelError(f"{config.model_type}: config defines no image token id")
        self.image_token_id = int(token_id)
        self.num_layers = int(config.get_text_config().num_hidden_layers)
        decoder_layers = getattr(model.get_decoder(), "layers", None)
        if decoder_layers is not None and len(decoder_layers) != self.num_layers:
            raise ModelError(
                f"decoder has {len(decoder_layers)} layers but the config says {self.num_layers}"
            )

    # ------------------------------------------------------------------ template pieces

    def placeholder(self) -> str:
        """The string the processor expands into this image's tokens."""
        return self.processor.image_token

    def processor_images(self, pairs: Sequence[Pair]) -> list[list[Any]]:
        """Images in the nested one-image-per-sample form processors accept."""
        return [[p.image] for p in pairs]

    def render_chat(self, passage: str) -> str:
        """The chat template with the image in the user turn and the passage as the assistant turn."""
        messages = [
            {"role": "user", "content": [{"type": "image"}]},
            {"role": "assistant", "content": [{"type": "text", "text": passage}]},
        ]
        if not getattr(self.processor, "chat_template", None):
            raise ModelError(
                f"{self.family}: the processor has no chat template; use --template plain or official"
            )
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )

    def _locate_in_chat(self, passage: str) -> tuple[str, int]:
        """(rendered chat, character offset of the passage in it), found via a sentinel.

        Rendering once with a sentinel in place of the passage tells where the template puts
        the assistant content, so a passage that also occurs in the template text (e.g.
        "assistant") cannot be mislocated.
        """
        with_sentinel = self.render_chat(_SENTINEL)
        if with_sentinel.count(_SENTINEL) != 1:
            raise ModelError(
                f"{self.family}: the chat template does not show the assistant turn once"
            )
        start = with_sentinel.index(_SENTINEL)
        rendered = with_sentinel[:start] + passage + with_sentinel[start + len(_SENTINEL) :]
        if self.render_chat(passage) != rendered:
            raise ModelError(
                f"{self.family}: the chat template alters the passage {passage[:40]!r}; "
                "use --template plain"
            )
        return rendered, start

    def _passage_ids(self, passage: str, max_tokens: int | None) -> tuple[list[int], bool]:
        """The passage's own tokens (no special tokens), cut to `max_tokens`."""
        ids = self.tokenizer(passage, add_special_tokens=False)["input_ids"]
        if max_tokens is not None and len(ids) > max_tokens:
            return ids[:max_tokens], True
        return ids, False

    # ------------------------------------------------------------------ templates

    def _chat_row(self, passage: str, max_tokens: int | None) -> RowSpec:
        """Chat template tokenized jointly; passage located by offsets, counted from the end."""
        truncated = False
        text = passage
        if max_tokens is not None:
            text, truncated = cut_text(self.tokenizer, passage, max_tokens)
        for _ in range(8):  # shrink until the passage has <= max_tokens tokens in context
            rendered, start = self._locate_in_chat(text)
            # As transformers' apply_chat_template(tokenize=True): the tokenizer adds its special
            # tokens unless the rendered template already starts with BOS.
            bos = self.tokenizer.bos_token
            special = not (bos and rendered.startswith(bos))
            enc = self.tokenizer(rendered, add_special_tokens=special, return_offsets_mapping=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            s, e = overlapping_span(offsets, start, start + len(text))
            if max_tokens is None or e - s <= max_tokens or not text:
                break
            text, truncated = cut_text(self.tokenizer, text, max(1, e - s - 1))[0], True
        if max_tokens is not None and e - s > max_tokens:
            raise DataError(
                f"{self.family}: cannot fit the passage into {max_tokens} tokens in context"
            )
        return RowSpec(
            head=rendered,
            text_len=e - s,
            text_end_offset=len(ids) - e,
            check_ids=list(ids[s:]),
            truncated=truncated,
            add_special_tokens=special,
        )

    def _plain_row(self, passage: str, max_tokens: int | None) -> RowSpec:
        """Processor-expanded image (with BOS if the tokenizer adds one) + the passage's ids."""
        ids, truncated = self._passage_ids(passage, max_tokens)
        return RowSpec(
            head=self.placeholder(),
            tail_ids=ids,
            tail_type=self.tail_token_type,
            text_len=len(ids),
            truncated=truncated,
        )

    def _official_row(self, passage: str, max_tokens: int | None) -> RowSpec:
        """vicuna_v1: `SYSTEM USER: <image>\\n ASSISTANT: passage</s>`; text = all after the image."""
        ids, truncated = self._passage_ids(passage, max_tokens)
        if not ids:
            return RowSpec(head="", text_len=0)
        if truncated:
            passage = self.tokenizer.decode(ids)
        eos = self.tokenizer.eos_token or ""
        tail = self.tokenizer("\n ASSISTANT: " + passage + eos, add_special_tokens=False)
        return RowSpec(
            head=f"{VICUNA_V1_SYSTEM} USER: {self.placeholder()}",
            tail_ids=tail["input_ids"],
            tail_type=self.tail_token_type,
            text_len=None,
            truncated=truncated,
        )

    # ------------------------------------------------------------------ prepare

    def prepare(
        self,
        pairs: Sequence[Pair],
        template: str = "chat",
        max_text_tokens: int | None = None,
    ) -> ModelBatch:
        """Tokenize and pad a batch; masks mark the expanded image tokens and the passage tokens.
        A passage is cut after `max_text_tokens` tokens, and always where the sequence would
        outgrow the model's context (`context_length`): `ModelBatch.truncated` counts both."""
        if not pairs:
            raise DataError("prepare() needs at least one pair")
        if template not in TEMPLATES:
            raise ConfigError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")
        if max_text_tokens is not None and max_text_tokens < 1:
            raise ConfigError(f"max_text_tokens must be >= 1, got {max_text_tokens}")
        build = getattr(self, f"_{template}_row")
        specs = []
        for p in pairs:
            spec = build(p.text.strip(), max_text_tokens)
            if spec.text_len == 0:
                raise DataError(
                    f"text passage {p.text_id!r} tokenizes to zero tokens ({p.text[:40]!r})"
                )
            specs.append(spec)
        enc = self._encode_heads(pairs, specs, template)
        rows, vision, text = self._assemble_rows(pairs, specs, enc)
        context = self.context_length()
        over = [i for i, r in enumerate(rows) if context and len(r["input_ids"]) > context]
        if over:  # a passage longer than the model reads: cut it to fit (counted as truncated)
            for i in over:
                budget = specs[i].text_len - (len(rows[i]["input_ids"]) - context)
                if budget < 1:
                    raise DataError(f"sample {pairs[i].image_id!r}: the image and template alone "
                                    f"fill the model's context of {context} tokens")  # fmt: skip
                specs[i] = build(pairs[i].text.strip(), budget)
            enc = self._encode_heads(pairs, specs, template)
            rows, vision, text = self._assemble_rows(pairs, specs, enc)
        side = getattr(self.tokenizer, "padding_side", "right") or "right"
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        pads = {"input_ids": int(pad_id), "attention_mask": 0, "vision": 0, "text": 0}
        for r, v, t in zip(rows, vision, text, strict=True):
            r["vision"], r["text"] = v, t
        tensors = pad_rows(rows, pads, side)
        vision_mask = tensors.pop("vision").bool()  # (B, T)
        text_mask = tensors.pop("text").bool()  # (B, T)
        inputs = {k: v for k, v in enc.items() if k not in tensors and k not in _DROP_KEYS}
        inputs.update(tensors)
        return ModelBatch(
            inputs=inputs,
            vision_mask=vision_mask,
            text_mask=text_mask,
            template=template,
            sample_ids=[{"image": p.image_id, "text": p.text_id} for p in pairs],
            truncated=[s.truncated for s in specs],
        )

    def context_length(self) -> int | None:
        """How many positions the language model reads (None: no limit it states). Passages
        longer than the room the image and template leave are cut to fit (`prepare`)."""
        config = self.model.config
        for source in (getattr(config, "text_config", None), config):
            value = getattr(source, "max_position_embeddings", None) if source is not None else None
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _encode_heads(self, pairs: Sequence[Pair], specs: list[RowSpec], template: str) -> Any:
        """One processor call for the whole batch (images + heads), as plain tensors."""
        special = {s.add_special_tokens for s in specs}
        if len(special) != 1:
            raise ModelError(f"{self.family}: rows of one batch disagree on special tokens")
        return self.processor(
            images=self.processor_images(pairs),
            text=[s.head for s in specs],
            padding=True,
            return_tensors="pt",
            add_special_tokens=special.pop(),
        )

    def _assemble_rows(
        self, pairs: Sequence[Pair], specs: list[RowSpec], enc: Any
    ) -> tuple[list[dict[str, list[int]]], list[list[int]], list[list[int]]]:
        """Unpadded per-row token arrays (processor tokens + appended ids) and 0/1 masks."""
        input_ids, attention = enc["input_ids"], enc["attention_mask"]
        token_keys = [
            k
            for k, v in enc.items()
            if isinstance(v, torch.Tensor) and v.shape == input_ids.shape and k not in _DROP_KEYS
        ]
        rows, vision, text = [], [], []
        for i, (pair, spec) in enumerate(zip(pairs, specs, strict=True)):
            keep = attention[i].bool()  # (T,) the row without padding
            row = {k: enc[k][i][keep].tolist() for k in token_keys}
            ids = row["input_ids"]
            if spec.check_ids and ids[-len(spec.check_ids) :] != spec.check_ids:
                raise ModelError(
                    f"{self.family}: the processor changed the tokens of passage {pair.text_id!r} "
                    "while expanding the image; cannot locate the passage exactly"
                )
            n_tail = len(spec.tail_ids)
            for k in token_keys:
                fill = {"input_ids": None, "attention_mask": 1, "token_type_ids": spec.tail_type}
                row[k] = row[k] + (spec.tail_ids if k == "input_ids" else [fill.get(k, 0)] * n_tail)
            n = len(ids) + n_tail
            ids = row["input_ids"]
            vis = [int(t == self.image_token_id) for t in ids]
            if not any(vis):
                raise ModelError(
                    f"{self.family}: no image tokens (id {self.image_token_id}) in the sequence of "
                    f"sample {pair.image_id!r}; the processor did not expand the image placeholder"
                )
            txt = [0] * n
            if spec.text_len is None:  # official: every token after the last image token
                last = max(j for j, v in enumerate(vis) if v)
                for j in range(last + 1, n):
                    txt[j] = 1
            else:
                end = n - spec.text_end_offset
                for j in range(end - spec.text_len, end):
                    txt[j] = 1
            if not any(txt):
                raise DataError(f"text passage {pair.text_id!r} has no tokens in the sequence")
            if any(v and t for v, t in zip(vis, txt, strict=True)):
                raise ModelError(
                    f"{self.family}: passage and image tokens overlap in {pair.text_id!r}"
                )
            rows.append(row)
            vision.append(vis)
            text.append(txt)
        return rows, vision, text

    # ------------------------------------------------------------------ forward

    def layer_ids(self, layers: Sequence[int] | None = None) -> list[int]:
        """Validated hidden_states indices: default 1..K (the outputs of decoder layers 1..K)."""
        if layers is None:
            return list(range(1, self.num_layers + 1))
        ids = [int(k) for k in layers]
        bad = [k for k in ids if not 0 <= k <= self.num_layers]
        if bad or not ids:
            raise ConfigError(
                f"layers {bad or ids} out of range: this decoder has layers 1..{self.num_layers} "
                "(0 = input embeddings)"
            )
        if len(set(ids)) != len(ids):
            raise ConfigError(f"duplicate layers in {ids}")
        return ids

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def model_inputs(self, batch: ModelBatch) -> dict[str, Any]:
        """Batch inputs moved to the model's device; floating tensors cast to its dtype."""
        out = {}
        for k, v in batch.inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device, dtype=self.dtype if v.is_floating_point() else None)
            out[k] = v
        return out

    def _call(self, batch: ModelBatch, **extra: Any) -> Any:
        """The model's forward on the batch (no gradient, no cache), with a clear error for an
        image-token count mismatch between processor and model."""
        inputs = self.model_inputs(batch)
        with torch.inference_mode():
            try:
                return self.model(**inputs, use_cache=False, return_dict=True, **extra)
            except ValueError as exc:
                msg = str(exc)
                if "token" in msg.lower() and ("match" in msg or "features" in msg):
                    raise ModelError(
                        f"{self.family}: image token count mismatch: the processor expanded each "
                        "image into a number of tokens that differs from the number of features "
                        "the model's vision tower produces (processor and model configs disagree, "
                        f"e.g. patch size / image_seq_len). transformers said: {msg}"
                    ) from exc
                raise

    def forward(self, batch: ModelBatch, layers: Sequence[int] | None = None) -> LayerStates:
        """Hidden states of the selected decoder layers (no attentions, no gradient)."""
        ids = self.layer_ids(layers)
        extra: dict[str, Any] = {"output_hidden_states": True}
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            extra["logits_to_keep"] = 1  # only the hidden states are needed
        out = self._call(batch, **extra)
        hidden = out.hidden_states
        if hidden is None or len(hidden) != self.num_layers + 1:
            got = None if hidden is None else len(hidden)
            raise ModelError(
                f"{self.family}: expected {self.num_layers + 1} hidden states, got {got}"
            )
        mask_dev = hidden[0].device
        return LayerStates(
            hidden=[hidden[k] for k in ids],
            vision_mask=batch.vision_mask.to(mask_dev),
            text_mask=batch.text_mask.to(mask_dev),
            layer_ids=ids,
        )

    def passage_nll(self, batch: ModelBatch) -> tuple[float, int]:
        """Summed next-token NLL of the passage tokens given everything before them (image and
        template), and how many tokens were scored: the caption loss in the batch's template."""
        logits = self._call(batch).logits  # (B, T, V)
        ids = batch.inputs["input_ids"].to(logits.device)  # (B, T)
        scored = batch.text_mask[:, 1:].to(logits.device)  # (B, T-1): token t+1 is a passage token
        if not scored.any():
            raise DataError("no passage tokens to score in this batch")
        picked = logits[:, :-1][scored].float()  # (n, V): the predictions of passage tokens
        nll = torch.nn.functional.cross_entropy(picked, ids[:, 1:][scored], reduction="sum")
        if not torch.isfinite(nll):
            raise MetricError(f"{self.family}: non-finite caption loss (check --dtype)")
        return float(nll), int(scored.sum())

    # ------------------------------------------------------------------ describe

    def describe(self, batch: ModelBatch, i: int) -> str:
        """Sample `i` as tokens, with the vision span and the text span marked (for --dry-run)."""
        return describe_sample(self.tokenizer, batch, i, self.family)
