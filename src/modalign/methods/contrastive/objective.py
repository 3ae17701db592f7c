"""The joint contrastive + next-token objective (Ak et al., "Aligning VLMs with contrastive
learning"): a CLIP-style symmetric InfoNCE between an image embedding and a text embedding, both
read from the LLM's final hidden state (after its final norm) at an appended EOS.

- image branch: the LLM runs on [BOS, (prompt prefix), image tokens from the connector,
  (prompt suffix), EOS]; with `prompt`, "This {photo|image|picture}: <image> means:" (the noun
  drawn uniformly per sample);
- text branch: [BOS, (prefix), caption tokens, (suffix), EOS]; with `prompt`, "This sentence:
  <text> means:". While the LLM is frozen the text embeddings do not change, so they are computed
  once per caption and cached (the paper's pre-extraction); when any LLM parameter trains they
  are recomputed every step;
- logits exp(s) * cos with s learnable, initialised to ln(1/0.07) and clamped to [0, ln 100]
  after each step (open_clip); with several processes the negatives are gathered from all of them.
Gradients reach the connector through the frozen LLM on the image branch.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from modalign.errors import DataError
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective
from modalign.methods.objectives.infonce import symmetric_infonce

IMAGE_NOUNS = ("photo", "image", "picture")


@OBJECTIVES.register("contrastive")
class JointContrastiveObjective(Objective):
    """See the module docstring. Options: `prompt` (PromptBERT-style wrappers), `logit_scale`
    (initial s), `max_logit_scale` (100), `cache_text` (reuse frozen text embeddings)."""

    name = "contrastive"
    needs_connector_output = True
    batch_keys = ("captions",)

    def __init__(
        self,
        weight: float = 1.0,
        prompt: bool = False,
        logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = 100.0,
        cache_text: bool = True,
    ) -> None:
        super().__init__(weight)
        self.prompt, self.cache_text = prompt, cache_text
        self.max_log_scale = math.log(max_logit_scale)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self._text_cache: dict[str, torch.Tensor] = {}
        self._tok: Any = None

    def setup(self, model: Any, processor: Any) -> None:
        """Keep the tokenizer and the prompt pieces' ids (once, before training)."""
        tok = getattr(processor, "tokenizer", processor)
        if tok.eos_token_id is None:
            raise DataError("objective 'contrastive' needs a tokenizer with an EOS token")
        self._tok = tok
        ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self._bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        self._eos = [tok.eos_token_id]
        self._text_wrap = (ids("This sentence:"), ids(" means:")) if self.prompt else ([], [])
        self._image_wraps = (
            [(ids(f"This {noun}:"), ids(" means:")) for noun in IMAGE_NOUNS]
            if self.prompt
            else [([], [])]
        )
        self._text_cache.clear()

    # ------------------------------------------------------------------ embeddings
    def _run(
        self, model: Any, embeds: list[torch.Tensor], vision: list[torch.Tensor]
    ) -> torch.Tensor:
        """Final hidden state at each row's last token (its EOS); rows right-padded."""
        from modalign.methods.moca import get_moca

        lengths = [e.shape[0] for e in embeds]
        width, d = max(lengths), embeds[0].shape[1]
        batch = embeds[0].new_zeros(len(embeds), width, d)  # (B, T, D)
        attention = torch.zeros(len(embeds), width, dtype=torch.long, device=batch.device)
        mask = torch.zeros(len(embeds), width, dtype=torch.bool, device=batch.device)
        for i, (e, v) in enumerate(zip(embeds, vision, strict=True)):
            batch[i, : e.shape[0]] = e
            attention[i, : e.shape[0]] = 1
            mask[i, : e.shape[0]] = v
        decoder = model.get_decoder()
        moca = get_moca(model)
        context = moca.vision_mask(mask) if moca is not None else nullcontext()
        with context:
            hidden = decoder(inputs_embeds=batch, attention_mask=attention).last_hidden_state
        last = torch.tensor(lengths, device=batch.device) - 1
        return hidden[torch.arange(len(embeds), device=batch.device), last]  # (B, D)

    def image_embeddings(self, model: Any, tokens: torch.Tensor) -> torch.Tensor:
        """(B, D) image embeddings from the connector's tokens (B, M, D)."""
        embed = model.get_input_embeddings()
        rows, vision = [], []
        for b in range(tokens.shape[0]):
            k = int(torch.randint(len(self._image_wraps), (1,))) if self.prompt else 0
            pre, post = self._image_wraps[k]
            head = embed(torch.tensor(self._bos + pre, device=tokens.device))
            tail = embed(torch.tensor(post + self._eos, device=tokens.device))
            rows.append(torch.cat([head, tokens[b].to(head.dtype), tail]))
            vision.append(torch.tensor([False] * head.shape[0] + [True] * tokens.shape[1]
                                       + [False] * tail.shape[0], device=tokens.device))  # fmt: skip
        return self._run(model, rows, vision)

    def text_embeddings(self, model: Any, captions: list[str]) -> torch.Tensor:
        """(B, D) text embeddings; cached per caption while the LLM is frozen."""
        frozen = not any(p.requires_grad for p in model.get_decoder().parameters())
        if not (self.cache_text and frozen):
            return self._encode_texts(model, captions)
        missing = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        if missing:
            with torch.no_grad():
                self._text_cache.update(
                    zip(missing, self._encode_texts(model, missing), strict=True)
                )
        return torch.stack([self._text_cache[c] for c in captions])

    def _encode_texts(self, model: Any, captions: list[str]) -> torch.Tensor:
        embed = model.get_input_embeddings()
        device = embed.weight.device
        pre, post = self._text_wrap
        rows = []
        for caption in captions:
            ids = self._tok(caption, add_special_tokens=False)["input_ids"]
            if not ids:
                raise DataError(f"caption {caption[:40]!r} tokenizes to nothing")
            rows.append(
                embed(torch.tensor(self._bos + pre + ids + post + self._eos, device=device))
            )
        vision = [torch.zeros(r.shape[0], dtype=torch.bool, device=device) for r in rows]
        return self._run(model, rows, vision)

    # ------------------------------------------------------------------ loss
    def forward(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:
        ctx.require_vision(self.name)
        if self._tok is None:
            raise RuntimeError("JointContrastiveObjective.setup(model, processor) was not called")
        captions = ctx.extras.get("captions")
        tokens = ctx.connector_output  # (B, M, D)
        if captions is None or len(captions) != tokens.shape[0]:
            raise DataError(
                "objective 'contrastive' needs the batch's captions (collator captions)"
            )
        image = self.image_embeddings(ctx.model, tokens).float()  # (B, D)
        text = self.text_embeddings(ctx.model, list(captions)).float()  # (B, D)
        scale = self.logit_scale.clamp(max=self.max_log_scale).exp()
        # gathered over processes; fewer than 2 pairs in all is a DataError
        loss = symmetric_infonce(image, text, scale, name="objective 'contrastive'")
        return {"contrastive": loss}

    def after_optimizer_step(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.max_log_scale)

    def extra_logs(self) -> dict[str, float]:
        return {"logit_scale": float(self.logit_scale.detach().exp())}
