"""Per-family adapters: only what differs from `VLMAdapter` (placeholders, framing, templates)."""

from __future__ import annotations

from typing import Any

from modalign.models.adapters.base import VLMAdapter
from modalign.models.adapters.registry import ADAPTERS
from modalign.models.sequence import RowSpec


@ADAPTERS.register("llava", "llava_next", "llava_onevision", "modalign_llava")
class LlavaAdapter(VLMAdapter):
    """LLaVA-1.5 / NeXT / OneVision / modalign_llava (any connector): `<image>` expands to the
    projected image tokens."""

    family = "llava"


@ADAPTERS.register("qwen2_vl", "qwen2_5_vl")
class QwenVLAdapter(VLMAdapter):
    """Qwen2-VL / Qwen2.5-VL: `<|image_pad|>` framed by vision start/end markers.

    The processor also returns `mm_token_type_ids` (needed for M-RoPE in transformers 5.x);
    tokens appended after the processor's output get type 0 (text).
    """

    family = "qwen_vl"

    def placeholder(self) -> str:
        return f"<|vision_start|>{self.processor.image_token}<|vision_end|>"


@ADAPTERS.register("idefics3", "smolvlm")
class Idefics3Adapter(VLMAdapter):
    """Idefics3 / SmolVLM: `<image>` expands to `<fake_token_around_image><global-img><image>...`."""

    family = "idefics3"


@ADAPTERS.register("gemma3")
class Gemma3Adapter(VLMAdapter):
    """Gemma3: `<start_of_image>` expands to boi + soft image tokens + eoi; the vision positions
    are the soft tokens (`config.image_token_id`), not `<start_of_image>`."""

    family = "gemma3"

    def placeholder(self) -> str:
        return self.processor.boi_token


@ADAPTERS.register("internvl")
class InternVLAdapter(VLMAdapter):
    """InternVL: `<IMG_CONTEXT>` expands to `<img>` + context tokens per tile + `</img>`."""

    family = "internvl"


@ADAPTERS.register("paligemma")
class PaliGemmaAdapter(VLMAdapter):
    """PaliGemma: image tokens, BOS, prompt and "\\n" form a bidirectional prefix; the answer is a
    causal suffix (token_type_ids = 1). PaliGemma has no chat template: `chat` uses this native
    prefix/suffix format with an empty prompt and the passage as the answer (+ EOS). `plain` is
    the processor's framing of the image alone (`<image>... <bos> \\n`) + the passage's ids."""

    family = "paligemma"
    tail_token_type = 1

    def _chat_row(self, passage: str, max_tokens: int | None) -> RowSpec:
        """`<image>... <bos> \\n` prefix from the processor + passage ids + EOS as the suffix."""
        ids, truncated = self._passage_ids(passage, max_tokens)
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        return RowSpec(
            head=self.placeholder(),
            tail_ids=ids + eos,
            tail_type=1,
            text_len=len(ids),
            text_end_offset=len(eos),
            truncated=truncated,
        )

    def _encode_heads(self, pairs: Any, specs: list[RowSpec], template: str) -> Any:
        # The processor inserts BOS itself after the image tokens.
        return self.processor(
            images=self.processor_images(pairs),
            text=[s.head for s in specs],
            padding=True,
            return_tensors="pt",
        )
