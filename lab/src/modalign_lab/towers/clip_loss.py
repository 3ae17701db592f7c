"""CLIP's symmetric InfoNCE with extra hard-negative captions on the image->text side."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negclip_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Mean of image->text CE over all captions and text->image CE over the positives.

    `outputs` is a CLIPModel output for B images and B + N captions whose first B are the
    positives (labels = arange(B)); with N = 0 this is exactly CLIP's own loss. The negatives
    are not used as text->image queries: they have no matching image (NegCLIP).
    Signature matches `transformers.Trainer(compute_loss_func=...)`.
    """
    b = labels.numel()
    per_image = outputs.logits_per_image  # (B, B + N)
    per_text = outputs.logits_per_text[:b]  # (B, B)
    if per_image.shape[0] != b or per_image.shape[1] < b:
        raise ValueError(
            f"expected logits for {b} images against >= {b} captions, got {tuple(per_image.shape)}"
        )
    return 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))
