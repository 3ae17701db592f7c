"""Recalled words (SEA Figure 1): for each vision token the LLM receives (the connector's output,
"layer 0"), the nearest words in the LLM's input-embedding space. A word's embedding is the mean
of its sub-tokens' input embeddings as the word appears mid-sentence (the same features SEA
aligns to); nearness is cosine.

    words = load_words("words.txt")
    top = recalled_words(model, processor, images, words, k=3)   # (N, M, 3) word indices
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from modalign.data.images import pixel_values_of
from modalign.errors import ModelError
from modalign.methods.sea.objective import word_token_ids


@torch.no_grad()
def word_embeddings(model: Any, tokenizer: Any, words: Sequence[str]) -> torch.Tensor:
    """(W, D) mean LLM input embedding of each word's sub-tokens."""
    ids, mask = word_token_ids(tokenizer, list(words))
    emb = model.get_input_embeddings()
    ids, mask = ids.to(emb.weight.device), mask.to(emb.weight.device)
    vectors = emb(ids)  # (W, L, D)
    return (vectors * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


@torch.no_grad()
def vision_tokens(model: Any, processor: Any, images: Sequence[Image.Image]) -> torch.Tensor:
    """(N, M, D) the connector's output for each image (what the LLM receives as image tokens)."""
    pixels = pixel_values_of(processor, images)
    device = next(model.parameters()).device
    features = model.model.get_image_features(pixel_values=pixels.to(device))
    features = getattr(features, "pooler_output", features)
    return torch.stack(list(features)) if isinstance(features, list | tuple) else features


@torch.no_grad()
def recalled_words(
    model: Any, processor: Any, images: Sequence[Image.Image], words: Sequence[str], k: int = 1,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(indices, cosines), each (N, M, k): the k nearest words of every vision token."""
    if k < 1 or k > len(words):
        raise ModelError(f"k must be in 1..{len(words)} (the word list), got {k}")
    table = F.normalize(
        word_embeddings(model, processor.tokenizer, words).float(), dim=-1
    )  # (W, D)
    idx, cos = [], []
    for start in range(0, len(images), batch_size):
        tokens = vision_tokens(model, processor, images[start : start + batch_size]).float()
        sims = F.normalize(tokens, dim=-1) @ table.T.to(tokens.device)  # (n, M, W)
        top = sims.topk(k, dim=-1)
        idx.append(top.indices.cpu())
        cos.append(top.values.cpu())
    return torch.cat(idx), torch.cat(cos)


def plot_recall(
    image: Image.Image, labels: Sequence[str], out_png: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """The image with its patch grid and each patch's recalled word (square grids only)."""
    from modalign.report.figure import new_figure, save_figure

    side = math.isqrt(len(labels))
    if side * side != len(labels):
        raise ModelError(f"{len(labels)} vision tokens do not form a square patch grid")
    fig = new_figure((4.8, 4.8))
    ax = fig.add_subplot()
    w, h = image.size
    ax.imshow(image, extent=(0, w, h, 0))
    for i, word in enumerate(labels):
        r, c = divmod(i, side)
        x, y = (c + 0.5) * w / side, (r + 0.5) * h / side
        ax.text(x, y, word, ha="center", va="center", fontsize=max(5, 40 // side), color="white",
                bbox={"facecolor": "black", "alpha": 0.55, "pad": 1, "linewidth": 0})  # fmt: skip
    for t in range(1, side):
        ax.axhline(t * h / side, color="white", linewidth=0.5, alpha=0.6)
        ax.axvline(t * w / side, color="white", linewidth=0.5, alpha=0.6)
    ax.set_axis_off()
    ax.set_title(title or "recalled word per image token (layer 0)", fontsize="small")
    return save_figure(fig, out_png)
