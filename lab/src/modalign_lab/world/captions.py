"""Captions at four detail levels, each a sentence-level prefix of the full description.

Mirrors the paper's caption-detailedness experiment (sec. 3.2), which truncates long captions at
sentence boundaries: level 0 is a short phrase, level 3 names every object with its attributes,
position and relations.
"""

from __future__ import annotations

from collections import Counter

from modalign_lab.world.scene import Scene, SceneObject
from modalign_lab.world.vocab import NUMBER_WORDS, POSITIONS, glyph_kind, plural

LEVELS = 4


def _article(word: str) -> str:
    """'a' or 'an'."""
    return "an" if word[0] in "aeiou" else "a"


def _join(items: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _glyph_phrase(scene: Scene) -> str:
    """'the digit 7' / 'the letter A'."""
    assert scene.glyph is not None
    return f"the {glyph_kind(scene.glyph)} {scene.glyph}"


def _summary(scene: Scene) -> str:
    """Level 0: counts per shape, plus the glyph."""
    counts = Counter(o.shape for o in scene.objects)
    parts = [f"{NUMBER_WORDS[n] if n > 1 else 'one'} {plural(s, n)}" for s, n in counts.items()]
    if scene.glyph is not None:
        parts.append(_glyph_phrase(scene))
    return _join(parts) + "."


def _listing(scene: Scene) -> str:
    """Level 1 sentence: colour and shape of every object."""
    items = [f"{_article(o.colour)} {o.colour} {o.shape}" for o in scene.objects]
    return "there is " + _join(items) + "."


def _object_sentence(o: SceneObject) -> str:
    """Level 2 sentence: size, colour, shape and grid position of one object."""
    where = "in the center" if o.position == "center" else f"at the {o.position}"
    return f"{_article(o.size)} {o.size} {o.colour} {o.shape} is {where}."


def _relation(a: SceneObject, b: SceneObject) -> str:
    """Level 3 sentence: where a lies relative to b (horizontal first, else vertical)."""
    if a.col != b.col:
        rel = "left of" if a.col < b.col else "right of"
    else:
        rel = "above" if a.row < b.row else "below"
    return f"the {a.colour} {a.shape} is {rel} the {b.colour} {b.shape}."


def caption_sentences(scene: Scene) -> list[list[str]]:
    """Sentences grouped by the level that introduces them (index 0..3)."""
    level2 = [_object_sentence(o) for o in scene.objects]
    if scene.glyph is not None:
        assert scene.glyph_cell is not None
        cell = POSITIONS[scene.glyph_cell]
        where = "in the center" if cell == "center" else f"at the {cell}"
        level2.append(f"{_glyph_phrase(scene)} is written {where}.")
    objs = scene.objects
    level3 = [_relation(objs[i], objs[i + 1]) for i in range(len(objs) - 1)]
    if len(objs) > 1 and len({o.size for o in objs}) > 1:
        large = [o for o in objs if o.size == "large"]
        level3.append(f"the largest is the {large[0].colour} {large[0].shape}.")
    if not level3:
        level3.append(f"the {objs[0].shape} is the only shape.")
    return [[_summary(scene)], [_listing(scene)], level2, level3]


def captions(scene: Scene) -> list[str]:
    """One caption per level, level k = all sentences introduced at levels 0..k."""
    groups = caption_sentences(scene)
    out, acc = [], []
    for group in groups:
        acc.extend(group)
        out.append(" ".join(acc))
    return out
