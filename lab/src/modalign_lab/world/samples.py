"""Index-based datasets over lab records: every item is a pure function of its index."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset

from modalign.errors import ConfigError, DataError
from modalign_lab.world.captions import LEVELS
from modalign_lab.world.dataset import Record
from modalign_lab.world.negatives import hard_negative_caption

MIXED = -1  # caption level meaning "every level, one item each"


def check_level(level: int) -> int:
    """Validate a caption level (0..3, or MIXED)."""
    if level != MIXED and not 0 <= level < LEVELS:
        raise ConfigError(
            f"caption level must be in 0..{LEVELS - 1} or {MIXED} (mixed), got {level}"
        )
    return level


@dataclass(frozen=True)
class ImageText:
    """An image with one caption (CLIP and pre-training items)."""

    image: Image.Image
    text: str
    negative: str | None = None  # caption of a minimally edited scene (CLIP hard negative)


class CaptionDataset(Dataset):
    """(image, caption) items; with MIXED each image appears once per level.

    `negatives_seed` adds a hard-negative caption to every item, a pure function of
    (seed, image, level), so training stays reproducible and resumable.
    """

    def __init__(self, records: list[Record], level: int, negatives_seed: int | None = None):
        if not records:
            raise DataError("no records: the split is empty")
        self.records = records
        self.level = check_level(level)
        self.negatives_seed = negatives_seed

    def __len__(self) -> int:
        return len(self.records) * (LEVELS if self.level == MIXED else 1)

    def __getitem__(self, idx: int) -> ImageText:
        if self.level == MIXED:
            rec, level = self.records[idx // LEVELS], idx % LEVELS
        else:
            rec, level = self.records[idx], self.level
        negative = None
        if self.negatives_seed is not None:
            rng = random.Random(f"neg:{self.negatives_seed}:{rec.image_id}:{level}")
            negative = hard_negative_caption(rec.scene, level, rng)
        return ImageText(rec.load_image(), rec.captions[level], negative)


class PackedTextDataset(Dataset):
    """The corpus as <s> line </s> <s> line </s> ... cut into equal blocks (no padding waste)."""

    def __init__(self, lines: list[str], tokenizer, block_size: int):
        if not lines:
            raise DataError("empty text corpus")
        if block_size < 2:
            raise ConfigError(f"block_size must be >= 2, got {block_size}")
        ids: list[int] = []
        for row in tokenizer(lines, add_special_tokens=False)["input_ids"]:
            ids.extend([tokenizer.bos_token_id, *row, tokenizer.eos_token_id])
        n_blocks = len(ids) // block_size
        if n_blocks == 0:
            raise DataError(f"corpus has {len(ids)} tokens, fewer than one block of {block_size}")
        self.blocks = torch.tensor(ids[: n_blocks * block_size]).view(
            n_blocks, block_size
        )  # (N, L)

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self.blocks[idx]
