"""Measurements of lab models: MIR on the world's probe, VQA and caption evaluation, recalled
words per cell, glyph legibility."""
