"""Tiny random models of every supported family, built once per test session (offline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

from modalign.data import Pair
from modalign.testing.tiny_vlms import build_tiny

FAMILIES = [
    "llava",
    "llava_next",
    "llava_onevision",
    "qwen2_vl",
    "qwen2_5_vl",
    "idefics3",
    "smolvlm",
    "paligemma",
    "gemma3",
    "internvl",
]

PASSAGES = [
    "a red circle on the left",
    "Hello world, two blue squares near the top of the picture.",
    "The quick brown fox jumps over the lazy dog.",
    "one yellow star",
    "0123456789 and some green triangles; (near) [the] top!",
    "picture",
    "A short caption about a picture of two shapes and a glyph, written at length to pad.",
    "text passage",
]


def _needs(family: str) -> None:
    """Skip (with the reason) where transformers itself needs an optional package."""
    if family == "smolvlm" and importlib.util.find_spec("num2words") is None:
        pytest.skip("transformers' SmolVLMProcessor requires the num2words package")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    """family -> directory of a saved tiny model (built on first use)."""
    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        _needs(family)
        if family not in built:
            built[family] = build_tiny(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_adapter(tiny_dir):
    """family -> adapter loaded back through `load_adapter` (the users' from_pretrained path)."""
    from modalign.models import load_adapter

    torch.set_num_threads(1)
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load_adapter(str(tiny_dir(family)), device="cpu", dtype="float32")
        return cache[family]

    return get


def make_pairs(n: int = 8) -> list[Pair]:
    """`n` pairs with images of varied sizes/colours and passages of varied lengths."""
    sizes = [(20, 12), (12, 30), (16, 16), (40, 24), (9, 9), (33, 17), (16, 48), (25, 25)]
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        g = torch.Generator().manual_seed(i)
        arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        img = Image.fromarray(arr, "RGB")
        out.append(Pair(img, f"img{i}.png", PASSAGES[i % len(PASSAGES)], i))
    return out
