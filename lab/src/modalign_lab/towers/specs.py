"""Sizes of the tiny models (frozen dataclasses, passed explicitly) and the cycle's SFT budget."""

from __future__ import annotations

from dataclasses import dataclass

from modalign.errors import ConfigError

# The fixed SFT budget of the test bed (docs/studies/reports/testbed.md): 250 steps of 32 conversations
# at a tenth of the pre-training rate. Until 2026-11 it was 1500 steps at 1e-3, which erased every
# pre-training difference (held-out VQA 0.69-0.71 whatever the pre-training).
SFT_STEPS = 250
SFT_LR = 1e-4


@dataclass(frozen=True)
class ClipSpec:
    """Tiny CLIP: ViT over patch x patch tiles plus a small text transformer.

    The default tiles a 96 px image into 3 x 3 patches of 32 px, one per cell of the world's
    grid, so each image token holds one object; with 8 px patches on 64 px images (64 tokens)
    the 4-layer 128-d LM answered shape questions at chance after SFT (0.14-0.20, chance 0.17).
    """

    image_size: int = 96
    patch_size: int = 32
    vision_hidden: int = 64
    vision_layers: int = 3
    text_hidden: int = 64
    text_layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    max_text_tokens: int = 128

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size {self.image_size} not a multiple of patch_size {self.patch_size}"
            )

    @property
    def num_patches(self) -> int:
        """Image tokens per image after dropping CLS."""
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class LMSpec:
    """Tiny Llama decoder."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 344
    max_positions: int = 512
