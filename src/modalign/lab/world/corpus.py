"""Text-only corpus for LM pre-training: scene descriptions, Q/A statements, generic facts.

Scenes here come from their own seed stream and are never rendered, so no split's images leak.
"""

from __future__ import annotations

import itertools
import random

from modalign.lab.world.captions import captions
from modalign.lab.world.scene import sample_scene
from modalign.lab.world.vocab import COLOURS, GLYPHS, NUMBER_WORDS, POSITIONS, SHAPES, glyph_kind
from modalign.lab.world.vqa import scene_vqa

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


def build_corpus(seed: int, n_scenes: int) -> list[str]:
    """Lines of text: captions of every level and Q/A statements of n_scenes unrendered scenes."""
    if n_scenes < 0:
        raise ValueError(f"n_scenes must be >= 0, got {n_scenes}")
    rng = random.Random(f"corpus:{seed}")
    lines = generic_sentences(rng) * 4
    for i in range(n_scenes):
        scene = sample_scene(random.Random(f"corpus:{seed}:{i}"), f"corpus-{i}")
        caps = captions(scene)
        lines.append(caps[rng.randrange(len(caps))])
        qa = rng.choice(scene_vqa(scene, seed))
        lines.append(f"{qa.question} {qa.answer}.")
    rng.shuffle(lines)
    return lines
