"""Question/answer pairs per scene: colour, shape, count, position, POPE existence, glyph."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from modalign_lab.world.scene import Scene, SceneObject
from modalign_lab.world.vocab import NUMBER_WORDS, SHAPES, glyph_kind, plural


@dataclass(frozen=True)
class QA:
    """One question with its single-phrase answer and its type (for per-type accuracy)."""

    qtype: str
    question: str
    answer: str


def _reference(o: SceneObject, scene: Scene, allow_position: bool) -> str | None:
    """Shortest unambiguous noun phrase for o, or None if none exists."""
    others = [x for x in scene.objects if x is not o]
    candidates = [
        (f"the {o.shape}", lambda x: x.shape == o.shape),
        (f"the {o.size} {o.shape}", lambda x: x.shape == o.shape and x.size == o.size),
    ]
    if allow_position:
        where = "in the center" if o.position == "center" else f"at the {o.position}"
        candidates.append((f"the {o.shape} {where}", lambda x: False))
    for phrase, clashes in candidates:
        if not any(clashes(x) for x in others):
            return phrase
    return None


def _colour_q(scene: Scene, rng: random.Random) -> QA:
    """What colour is <ref>?"""
    o = rng.choice(scene.objects)
    ref = _reference(o, scene, allow_position=True)
    return QA("colour", f"what colour is {ref}?", o.colour)


def _shape_q(scene: Scene, rng: random.Random) -> QA:
    """What shape is at <position>?"""
    o = rng.choice(scene.objects)
    where = "in the center" if o.position == "center" else f"at the {o.position}"
    return QA("shape", f"what shape is {where}?", o.shape)


def _count_q(scene: Scene, rng: random.Random) -> QA:
    """How many shapes / <shape>s are there?"""
    counts = Counter(o.shape for o in scene.objects)
    if rng.random() < 0.5:
        return QA("count", "how many shapes are there?", NUMBER_WORDS[len(scene.objects)])
    shape = rng.choice(sorted(counts))
    return QA("count", f"how many {plural(shape, 2)} are there?", NUMBER_WORDS[counts[shape]])


def _position_q(scene: Scene, rng: random.Random) -> QA | None:
    """Where is <ref>? (reference without position words)."""
    order = list(scene.objects)
    rng.shuffle(order)
    for o in order:
        ref = _reference(o, scene, allow_position=False)
        if ref is not None:
            return QA("position", f"where is {ref}?", o.position)
    return None


def _existence_qs(scene: Scene, rng: random.Random) -> list[QA]:
    """POPE-style object existence: one 'yes' (a present shape) and one 'no' (an absent shape).

    As in POPE the question names an object category (here: a shape) without attributes.
    A colour + shape conjunction variant stayed at exactly chance (always 'yes') after SFT of
    the 4-layer lab LM in every run, and even the text-only LM could not answer it from a
    written description, so it does not measure the vision side.
    """
    present = sorted({o.shape for o in scene.objects})
    absent = [s for s in SHAPES if s not in present]  # never empty: at most 4 of 6 shapes
    yes = QA("existence", f"is there a {rng.choice(present)} in the image?", "yes")
    no = QA("existence", f"is there a {rng.choice(absent)} in the image?", "no")
    return [yes, no]


def _glyph_q(scene: Scene) -> QA | None:
    """Which letter/digit is written?"""
    if scene.glyph is None:
        return None
    return QA("glyph", f"which {glyph_kind(scene.glyph)} is written in the image?", scene.glyph)


def scene_vqa(scene: Scene, seed: int) -> list[QA]:
    """All questions for one scene, deterministic in (scene, seed); existence is yes/no balanced."""
    rng = random.Random(f"vqa:{seed}:{scene.scene_id}")
    qas = [_colour_q(scene, rng), _shape_q(scene, rng), _count_q(scene, rng)]
    pos = _position_q(scene, rng)
    if pos is not None:
        qas.append(pos)
    qas.extend(_existence_qs(scene, rng))
    glyph = _glyph_q(scene)
    if glyph is not None:
        qas.append(glyph)
    return qas
