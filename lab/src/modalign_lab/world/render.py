"""Draw a Scene as an RGB PIL image (antialiased shapes, bitmap-font glyph), deterministically."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw, ImageFont

from modalign.errors import ConfigError
from modalign_lab.world.scene import Scene, SceneObject
from modalign_lab.world.vocab import BACKGROUND, COLOURS, GLYPH_COLOUR, GRID

MIN_SIZE, MAX_SIZE = 64, 288  # above 96: high-resolution worlds (tiles of the tower's 96 px)
_SUPERSAMPLE = 4
_RADIUS = {"small": 0.24, "large": 0.42}  # fraction of the cell side


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, ...]:
    """Perturb a nominal colour so colour names cover a small region, not one RGB value."""
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape centred at (cx, cy) with circumradius r."""
    if shape == "square":
        pts = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "diamond":
        pts = [(k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        pts = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == "star":
        pts = [(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else r * 0.45) for k in range(10)]
    else:
        raise ValueError(f"not a polygon shape: {shape!r}")
    return [(cx + rr * math.cos(a + rot), cy + rr * math.sin(a + rot)) for a, rr in pts]


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, cell: float, rng: random.Random):
    """Draw one object (coordinates already in supersampled pixels)."""
    r = _RADIUS[obj.size] * cell * rng.uniform(0.92, 1.08)
    slack = cell / 2 - r
    cx = (obj.col + 0.5) * cell + rng.uniform(-0.5, 0.5) * slack
    cy = (obj.row + 0.5) * cell + rng.uniform(-0.5, 0.5) * slack
    fill = _jitter(COLOURS[obj.colour], rng)
    rot = rng.uniform(-0.15, 0.15)
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif obj.shape == "cross":
        w = r * 0.38
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r, rot), fill=fill)


def _glyph_image(glyph: str, scale: int) -> Image.Image:
    """The glyph from PIL's built-in bitmap font, cropped to its ink and scaled (nearest)."""
    font = ImageFont.load_default_imagefont()
    canvas = Image.new("L", (16, 16), 0)
    ImageDraw.Draw(canvas).text((2, 2), glyph, fill=255, font=font)
    bbox = canvas.getbbox()
    if bbox is None:
        raise ValueError(f"glyph {glyph!r} renders empty in the default font")
    ink = canvas.crop(bbox)
    return ink.resize((ink.width * scale, ink.height * scale), Image.Resampling.NEAREST)


def render_scene(scene: Scene, size: int = 64, glyph_scale: int | None = None) -> Image.Image:
    """Render at `size` px (64-288); same scene and size always give the same pixels.

    `glyph_scale`: pixel size of one font dot (default max(2, size / 32)); a small scale on a big
    image makes the glyph legible only at full resolution (the high-resolution world)."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"image size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    if glyph_scale is not None and glyph_scale < 1:
        raise ConfigError(f"glyph_scale must be >= 1, got {glyph_scale}")
    rng = random.Random(scene.seed)
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), _jitter(BACKGROUND, rng, 6))
    draw = ImageDraw.Draw(img)
    cell = big / GRID
    for obj in scene.objects:
        _draw_object(draw, obj, cell, rng)
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    if scene.glyph is not None and scene.glyph_cell is not None:
        scale = glyph_scale if glyph_scale is not None else max(2, round(size / 32))
        mask = _glyph_image(scene.glyph, scale)
        small_cell = size / GRID
        row, col = divmod(scene.glyph_cell, GRID)
        x = int((col + 0.5) * small_cell - mask.width / 2) + rng.randint(-1, 1)
        y = int((row + 0.5) * small_cell - mask.height / 2) + rng.randint(-1, 1)
        img.paste(Image.new("RGB", mask.size, GLYPH_COLOUR), (x, y), mask)
    return img
