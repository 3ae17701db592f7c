"""Procedural scenes (shapes, colours, sizes, positions, glyphs) with captions, VQA and a corpus."""

from modalign.lab.world.scene import Scene, SceneObject, sample_scene
from modalign.lab.world.vocab import COLOURS, GLYPHS, POSITIONS, SHAPES, SIZES

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
