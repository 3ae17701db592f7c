"""Procedural scenes (shapes, colours, sizes, positions, glyphs) with captions, VQA and a corpus."""

from modalign_lab.world.scene import Scene, SceneObject, sample_scene
from modalign_lab.world.vocab import COLOURS, GLYPHS, POSITIONS, SHAPES, SIZES

__all__ = [
    "COLOURS",
    "GLYPHS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneObject",
    "sample_scene",
]
