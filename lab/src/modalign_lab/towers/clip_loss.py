"""CLIP's symmetric InfoNCE with extra hard-negative captions on the image->text side (NegCLIP),
through the library's shared InfoNCE."""

from __future__ import annotations

import torch
import torch.distributed as dist

from modalign.errors import ModelError
from modalign.methods.objectives import infonce_from_logits, symmetric_infonce


def negclip_loss(
    outputs,
    labels: torch.Tensor,
    num_items_in_batch=None,
    *,
    logit_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of image->text CE over all captions and text->image CE over the positives.

    `outputs` is a CLIPModel output for B images and B + N captions whose first B are the
    positives (labels = arange(B)); with N = 0 this is exactly CLIP's own loss. The negatives
    are not used as text->image queries: they have no matching image (NegCLIP).
    With one process the loss reads the logits CLIPModel computed. With several, and the model's
    `logit_scale` parameter (log s) given, it gathers every process's images, positives and
    negatives and scores them all (`symmetric_infonce`), as one process would on the
    concatenated batch. Signature matches `transformers.Trainer(compute_loss_func=...)`.
    """
    b = labels.numel()
    per_image = outputs.logits_per_image  # (B, B + N)
    if per_image.shape[0] != b or per_image.shape[1] < b:
        raise ModelError(
            f"expected logits for {b} images against >= {b} captions, got {tuple(per_image.shape)}"
        )
    several = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if logit_scale is not None and several:
        if not torch.equal(labels.cpu(), torch.arange(b)):
            raise ModelError("NegCLIP across processes needs labels = arange(B)")
        text = outputs.text_embeds  # (B + N, D): positives, then negatives
        return symmetric_infonce(outputs.image_embeds, text[:b], logit_scale.exp(),
                                 extra_b=text[b:], name="NegCLIP")  # fmt: skip
    per_text = outputs.logits_per_text[:b]  # (B, B)
    return infonce_from_logits(per_image, per_text, labels)
