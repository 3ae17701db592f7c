"""The closed vocabulary of the world: shapes, colours, sizes, grid positions, glyphs, numbers."""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
SHAPE_PLURALS: dict[str, str] = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}

# Nominal RGB per colour name; rendering jitters each channel a little.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 220),
}
SIZES: tuple[str, ...] = ("small", "large")

# 3 x 3 grid, row-major; names are what captions and answers use.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
GRID = 3

GLYPHS: tuple[str, ...] = tuple("0123456789AEHKMX")
GLYPH_COLOUR = (245, 245, 245)
BACKGROUND = (28, 28, 32)

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")

MAX_OBJECTS = 4


def glyph_kind(glyph: str) -> str:
    """'digit' or 'letter': the noun captions use for a glyph."""
    return "digit" if glyph.isdigit() else "letter"


def plural(shape: str, n: int) -> str:
    """Shape noun agreeing with n."""
    return shape if n == 1 else SHAPE_PLURALS[shape]


def label_words() -> list[str]:
    """The words a patch can show (SEA's word list in the world): colours, shapes, sizes, glyphs."""
    return [*COLOURS, *SHAPES, *SIZES, *GLYPHS]
