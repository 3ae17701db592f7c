"""Text-only corpus for LM pre-training: scene descriptions, grounded Q/A, generic facts.

Scenes here come from their own seed stream and are never rendered, so no split's images leak.
Questions always follow a description of their own scene ("reading comprehension"): an LM
that has learnt to answer from context can later answer from image tokens once the connector
maps them near the words; free-floating Q/A lines would only teach answer priors.
"""

from __future__ import annotations

import itertools
import random

from modalign.errors import ConfigError
from modalign_lab.world.captions import captions
from modalign_lab.world.scene import Scene, sample_scene
from modalign_lab.world.vocab import COLOURS, GLYPHS, NUMBER_WORDS, POSITIONS, SHAPES, glyph_kind
from modalign_lab.world.vqa import scene_vqa

_SIDES = {"triangle": "three", "square": "four", "diamond": "four", "star": "ten"}


def generic_sentences(rng: random.Random) -> list[str]:
    """Templated world facts: colours, shapes, numbers, positions, glyph order."""
    out = []
    for c in COLOURS:
        out.append(f"{c} is a colour.")
        out.append(
            f"the colour {c} is not the colour {rng.choice([x for x in COLOURS if x != c])}."
        )
    for s in SHAPES:
        out.append(f"a {s} is a shape.")
        if s in _SIDES:
            out.append(f"a {s} has {_SIDES[s]} sides.")
    for i in range(1, len(NUMBER_WORDS) - 1):
        out.append(f"{NUMBER_WORDS[i]} comes after {NUMBER_WORDS[i - 1]}.")
        for j in range(1, len(NUMBER_WORDS) - i):
            out.append(f"{NUMBER_WORDS[i]} and {NUMBER_WORDS[j]} make {NUMBER_WORDS[i + j]}.")
    for a, b in itertools.pairwise(GLYPHS):
        if glyph_kind(a) == glyph_kind(b):
            out.append(f"the {glyph_kind(a)} {a} comes before the {glyph_kind(b)} {b}.")
    for p in POSITIONS:
        out.append(f"the {p} is a place in the image.")
    out.append("the image shows shapes on a dark background.")
    out.append("some images show a letter or a digit written in white.")
    return out


def scene_document(scene: Scene, seed: int, rng: random.Random) -> str:
    """A description detailed enough to answer every question type, then all its Q/A, shuffled."""
    text = captions(scene)[rng.choice((2, 3))]
    qas = scene_vqa(scene, seed)
    rng.shuffle(qas)
    return " ".join([text, *(f"{qa.question} {qa.answer}." for qa in qas)])


def build_corpus(seed: int, n_scenes: int) -> list[str]:
    """Lines of text: per unrendered scene, a caption of a random level or a grounded Q/A document."""
    if n_scenes < 0:
        raise ConfigError(f"n_scenes must be >= 0, got {n_scenes}")
    rng = random.Random(f"corpus:{seed}")
    lines = generic_sentences(rng) * 4
    for i in range(n_scenes):
        scene = sample_scene(random.Random(f"corpus:{seed}:{i}"), f"corpus-{i}")
        if rng.random() < 0.5:
            caps = captions(scene)
            lines.append(caps[rng.randrange(len(caps))])
        else:
            lines.append(scene_document(scene, seed, rng))
    rng.shuffle(lines)
    return lines
