"""A small probe set for `modalign validate` tests: 8 seeded random 16x16 images and 8 captions."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image


def write_probe(root: Path) -> tuple[Path, Path]:
    """ROOT/images (8 PNGs) and ROOT/texts.txt (8 lines); returns both."""
    images = root / "images"
    images.mkdir()
    for k in range(8):
        g = torch.Generator().manual_seed(k)
        arr = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr, "RGB").save(images / f"{k}.png")
    texts = root / "texts.txt"
    texts.write_text("\n".join(f"a picture of {k} red circles near the top left" for k in range(8)))
    return images, texts
