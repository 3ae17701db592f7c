"""A scene: 1-4 coloured shapes and an optional glyph on a 3 x 3 grid, sampled from a seed."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from modalign_lab.world.vocab import COLOURS, GLYPHS, GRID, MAX_OBJECTS, POSITIONS, SHAPES, SIZES


@dataclass(frozen=True)
class SceneObject:
    """One shape: what it is, what it looks like and which grid cell holds it."""

    shape: str
    colour: str
    size: str
    cell: int  # 0..8, row-major

    @property
    def position(self) -> str:
        """Grid cell name used in captions and answers."""
        return POSITIONS[self.cell]

    @property
    def row(self) -> int:
        """Grid row, 0 = top."""
        return self.cell // GRID

    @property
    def col(self) -> int:
        """Grid column, 0 = left."""
        return self.cell % GRID


@dataclass(frozen=True)
class Scene:
    """Everything needed to render an image and write its captions/questions deterministically."""

    scene_id: str
    objects: tuple[SceneObject, ...]  # sorted by cell (reading order)
    glyph: str | None
    glyph_cell: int | None
    seed: int  # rendering jitter seed

    def key(self) -> tuple:
        """Structural identity (ignores rendering jitter): used to keep splits disjoint."""
        return (
            tuple((o.shape, o.colour, o.size, o.cell) for o in self.objects),
            self.glyph,
            self.glyph_cell,
        )

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "id": self.scene_id,
            "objects": [asdict(o) for o in self.objects],
            "glyph": self.glyph,
            "glyph_cell": self.glyph_cell,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        """Inverse of to_dict."""
        return cls(
            scene_id=str(d["id"]),
            objects=tuple(SceneObject(**o) for o in d["objects"]),
            glyph=d["glyph"],
            glyph_cell=d["glyph_cell"],
            seed=int(d["seed"]),
        )


def sample_scene(rng: random.Random, scene_id: str, glyph_prob: float = 0.5) -> Scene:
    """Draw one scene; shapes may repeat (for count questions), cells never do."""
    n = rng.randint(1, MAX_OBJECTS)
    has_glyph = rng.random() < glyph_prob
    cells = rng.sample(range(GRID * GRID), n + int(has_glyph))
    objects = []
    for cell in cells[:n]:
        # A repeated shape with probability 0.3 so counts above one occur often enough.
        shape = rng.choice(objects).shape if objects and rng.random() < 0.3 else rng.choice(SHAPES)
        objects.append(SceneObject(shape, rng.choice(tuple(COLOURS)), rng.choice(SIZES), cell))
    objects.sort(key=lambda o: o.cell)
    glyph = rng.choice(GLYPHS) if has_glyph else None
    glyph_cell = cells[n] if has_glyph else None
    return Scene(scene_id, tuple(objects), glyph, glyph_cell, rng.getrandbits(31))
