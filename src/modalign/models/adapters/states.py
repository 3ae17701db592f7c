"""Data passed between adapter.prepare, adapter.forward and the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ModelBatch:
    """A padded model input plus the masks that say which positions are vision / passage tokens."""

    inputs: dict[str, Any]  # everything the model's forward takes (input_ids, pixel_values, ...)
    vision_mask: torch.Tensor  # Bool (B, T): expanded image-token positions
    text_mask: torch.Tensor  # Bool (B, T): the passage's own tokens
    template: str
    sample_ids: list[dict[str, Any]] = field(default_factory=list)  # image_id / text_id per row
    truncated: list[bool] = field(default_factory=list)  # passage cut to max_text_tokens per row

    def __len__(self) -> int:
        return int(self.vision_mask.shape[0])


@dataclass
class LayerStates:
    """Per-layer decoder hidden states of one batch with the masks that select the two modalities."""

    hidden: list[torch.Tensor]  # one (B, T, d) tensor per selected layer
    vision_mask: torch.Tensor  # Bool (B, T)
    text_mask: torch.Tensor  # Bool (B, T)
    layer_ids: list[int]  # index into transformers' hidden_states (1 = output of decoder layer 1)

    def tokens(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(vision, text): per layer, the selected rows flattened over the batch, (n, d) each."""
        vision = [h[self.vision_mask] for h in self.hidden]  # (n_v, d)
        text = [h[self.text_mask] for h in self.hidden]  # (n_t, d)
        return vision, text
