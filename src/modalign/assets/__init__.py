"""The shipped demo: a small pre-trained (stage-1) LLaVA and its held-out evaluation set, what
`modalign mir` scores when no model is given.

Both live in `modalign/assets/default/`; the miniature-world lab rebuilds them bit-for-bit
(`modalign lab build-default`).
"""

from __future__ import annotations

import random
from pathlib import Path

from modalign.data.images import open_rgb
from modalign.data.pairs import Pair
from modalign.errors import ConfigError, DataError

__all__ = ["default_dir", "default_eval_pairs", "default_model_path"]


def default_dir() -> Path:
    """modalign/assets/default inside the installed package."""
    return Path(__file__).resolve().parent / "default"


def default_model_path() -> Path:
    """Directory of the default model (config.json + model.safetensors + processor files)."""
    path = default_dir() / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise DataError(
            f"default model missing at {path}; rebuild it with `modalign lab build-default`"
        )
    return path


def _eval_dir() -> Path:
    """Directory of the default evaluation set; clear error if absent."""
    path = default_dir() / "eval"
    if not (path / "passages.txt").is_file():
        raise DataError(
            f"default evaluation set missing at {path}; run `modalign lab build-default`"
        )
    return path


def default_eval_pairs(n: int | None = None, seed: int = 0) -> list[Pair]:
    """Held-out (image, detailed caption) pairs; all in file order, or a seeded subset of n."""
    root = _eval_dir()
    passages = (root / "passages.txt").read_text(encoding="utf-8").splitlines()
    images = sorted((root / "images").glob("*.png"))
    if len(images) != len(passages):
        raise DataError(f"{root}: {len(images)} images but {len(passages)} passages")
    order = list(range(len(images)))
    if n is not None:
        if not 1 <= n <= len(order):
            raise ConfigError(f"n must be in 1..{len(order)} (size of the default set), got {n}")
        order = random.Random(seed).sample(order, n)
    pairs = []
    for i in order:
        image = open_rgb(images[i])
        pairs.append(
            Pair(image=image, image_id=f"images/{images[i].name}", text=passages[i], text_id=i)
        )
    return pairs
