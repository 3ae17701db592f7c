"""Codebook indices of images from a frozen VQ model (VLSA's Target_VQ), for cognition turns.

The nearest code per latent cell, argmin_k ||L_p - B_k||^2 (the paper prints an argmin of a
product; the nearest code is what a VQ encoder means), computed here from the encoder's latents and
the codebook so any diffusers `VQModel` works the same. Codes are written as decimal text, so the
LLM's tokenizer must write every index back exactly (`check_codes_fit`).

    codes = vq_codes(vq, pixels)             # (B, h' * w') int64
    reader = VQCodeReader(vq, size=64)       # Sample -> list[int], for CognitionTargets
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from modalign.data.conversations import Sample
from modalign.errors import ConfigError, ModelError

__all__ = ["VQCodeReader", "check_codes_fit", "codebook", "vq_codes"]


def codebook(model: Any) -> torch.Tensor:
    """(K, d') code vectors of a diffusers VQModel (its quantizer's embedding)."""
    quantize = getattr(model, "quantize", None)
    embedding = getattr(quantize, "embedding", None)
    if not isinstance(embedding, torch.nn.Embedding):
        raise ModelError(
            f"{type(model).__name__} has no quantize.embedding codebook: pass a diffusers VQModel"
        )
    return embedding.weight


@torch.no_grad()
def vq_codes(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) pixels in [-1, 1] -> (B, h' * w') nearest-code indices, row-major."""
    latents = model.encode(pixels).latents  # (B, d', h', w'), after quant_conv
    book = codebook(model).to(latents.dtype)  # (K, d')
    flat = latents.permute(0, 2, 3, 1).reshape(latents.shape[0], -1, latents.shape[1])
    dist = torch.cdist(flat.float(), book.float().unsqueeze(0))  # (B, h'w', K)
    return dist.argmin(-1)  # (B, h'w')


def check_codes_fit(tokenizer: Any, size: int) -> None:
    """ConfigError unless the tokenizer writes every index 0..size-1 (and a space-separated
    run of them) as text that decodes back to exactly that text, with no unknown token."""
    if size < 1:
        raise ConfigError(f"a codebook needs at least one code, got {size}")
    texts = [str(k) for k in range(size)] + [" ".join(str(k) for k in range(min(size, 64)))]
    unk = getattr(tokenizer, "unk_token_id", None)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]  # one batched call
    decoded = tokenizer.batch_decode(encoded, skip_special_tokens=False)
    for text, ids, back in zip(texts, encoded, decoded, strict=True):
        if not ids or (unk is not None and unk in ids) or back.strip() != text:
            raise ConfigError(
                f"the tokenizer cannot write codebook index text {text[:40]!r} (got "
                f"{back[:40]!r}); a codebook of {size} codes does not fit its digits"
            )


class VQCodeReader:
    """Sample -> its image's codebook indices: resized to `size` px, scaled to [-1, 1]."""

    def __init__(self, model: Any, size: int) -> None:
        codebook(model)
        self.model, self.size = model.eval(), size

    def __call__(self, sample: Sample) -> list[int]:
        if sample.image is None:
            raise ModelError(f"conversation {sample.conversation.id!r} has no image")
        image = sample.image.convert("RGB").resize((self.size, self.size))
        arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (H, W, 3) in [-1, 1]
        param = next(self.model.parameters())
        pixels = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        return vq_codes(self.model, pixels.to(param.device, param.dtype))[0].tolist()
