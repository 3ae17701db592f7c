"""Hard-negative scenes: the same image description with one attribute changed (NegCLIP-style).

With random in-batch captions, colours and counts alone usually identify the right caption, so
contrastive training has little reason to encode shapes or exact places. Captions of minimally
edited scenes force those distinctions: a changed shape, a changed colour, two objects swapping
places, or a different glyph (Yuksekgonul et al., 2023, "When and why vision-language models
behave like bags-of-words").
"""

from __future__ import annotations

import random
from dataclasses import replace

from modalign_lab.world.captions import captions
from modalign_lab.world.scene import Scene
from modalign_lab.world.vocab import COLOURS, GLYPHS, SHAPES

# Edit kinds and their weights; shape edits dominate because shape is what CLIP fails to learn.
EDITS: tuple[tuple[str, float], ...] = (
    ("shape", 0.5),
    ("colour", 0.2),
    ("swap", 0.15),
    ("glyph", 0.15),
)


def _edit(scene: Scene, kind: str, rng: random.Random) -> Scene | None:
    """Scene with one edit of `kind`, or None when that edit is impossible for this scene."""
    objs = list(scene.objects)
    if kind == "shape":
        i = rng.randrange(len(objs))
        objs[i] = replace(objs[i], shape=rng.choice([s for s in SHAPES if s != objs[i].shape]))
    elif kind == "colour":
        i = rng.randrange(len(objs))
        objs[i] = replace(objs[i], colour=rng.choice([c for c in COLOURS if c != objs[i].colour]))
    elif kind == "swap":
        pairs = [
            (i, j)
            for i in range(len(objs))
            for j in range(i + 1, len(objs))
            if (objs[i].shape, objs[i].colour, objs[i].size)
            != (objs[j].shape, objs[j].colour, objs[j].size)
        ]
        if not pairs:
            return None
        i, j = rng.choice(pairs)
        objs[i], objs[j] = replace(objs[i], cell=objs[j].cell), replace(objs[j], cell=objs[i].cell)
    elif kind == "glyph":
        if scene.glyph is None:
            return None
        return replace(scene, glyph=rng.choice([g for g in GLYPHS if g != scene.glyph]))
    else:
        raise ValueError(f"unknown edit {kind!r}; expected one of {[k for k, _ in EDITS]}")
    return replace(scene, objects=tuple(sorted(objs, key=lambda o: o.cell)))


def hard_negative_caption(scene: Scene, level: int, rng: random.Random) -> str:
    """Caption at `level` of a minimally edited scene; always differs from the true caption."""
    truth = captions(scene)[level]
    kinds, weights = zip(*EDITS, strict=True)
    for _ in range(32):
        edited = _edit(scene, rng.choices(kinds, weights)[0], rng)
        if edited is not None and (text := captions(edited)[level]) != truth:
            return text
    # A shape edit always changes every level's text (level 0 counts shapes), so this is
    # reached only for pathological scenes; fail loudly rather than return the positive.
    raise ValueError(f"no caption-changing edit found for scene {scene.scene_id} at level {level}")
