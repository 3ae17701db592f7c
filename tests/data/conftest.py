"""Small offline fixtures for the data tests: image folders, text files, pairs files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


def write_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Path:
    """Write a small solid-colour image (format from the suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if path.suffix == ".gif" else "RGB"
    Image.new(mode, size, color[0] if mode == "L" else color).save(path)
    return path


@pytest.fixture
def make_image() -> object:
    """The `write_image` helper, as a fixture (test folders are not packages)."""
    return write_image


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder of 6 images in nested folders and mixed formats (no bad files)."""
    root = tmp_path / "images"
    for i, name in enumerate(
        ["b.png", "a.jpg", "sub/c.png", "sub/deeper/d.gif", "e.bmp", "f.webp"]
    ):
        write_image(root / name, (40 * i, 10, 200 - 30 * i))
    return root
