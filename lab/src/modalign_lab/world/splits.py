"""Train/val/test splits of scenes that never share an image (distinct ids and structures)."""

from __future__ import annotations

import random

from modalign.errors import ConfigError
from modalign_lab.world.scene import Scene, sample_scene

SPLITS: tuple[str, ...] = ("train", "val", "test")


def _draw(seed: int, split: str, n: int, exclude: set[tuple]) -> list[Scene]:
    """n scenes of one split, skipping structures already used elsewhere or earlier."""
    out: list[Scene] = []
    seen = set(exclude)
    attempt = 0
    while len(out) < n:
        if attempt > 50 * n + 1000:
            raise ConfigError(f"cannot draw {n} distinct {split} scenes; ask for fewer")
        scene = sample_scene(random.Random(f"{split}:{seed}:{attempt}"), f"{split}-{attempt:06d}")
        attempt += 1
        if scene.key() in seen:
            continue
        seen.add(scene.key())
        out.append(scene)
    return out


def make_splits(seed: int, sizes: dict[str, int]) -> dict[str, list[Scene]]:
    """Scenes per split; test is drawn first, then val, then train excluding both."""
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ConfigError(f"unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    out: dict[str, list[Scene]] = {}
    used: set[tuple] = set()
    for split in ("test", "val", "train"):
        n = sizes.get(split, 0)
        if n < 0:
            raise ConfigError(f"split size must be >= 0, got {split}={n}")
        out[split] = _draw(seed, split, n, used)
        used |= {s.key() for s in out[split]}
    return {s: out[s] for s in SPLITS if s in sizes}
