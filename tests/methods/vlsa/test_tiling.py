"""Tiling for high-resolution input: fit, pad (bottom / right), views that cover the canvas once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from modalign.errors import ConfigError, DataError
from modalign.methods.vlsa.tiling import MAX_TILES, TileGrid, fit_grid, pad_to_grid, split_views


def test_fit_grid_keeps_the_aspect_and_fits_the_canvas():
    assert fit_grid((480, 640), 2, 2, 336) == TileGrid(2, 2, 504, 672)  # width-bound, x1.05
    assert fit_grid((1000, 200), 2, 2, 336) == TileGrid(2, 2, 672, 134)  # height-bound, shrunk
    assert fit_grid((672, 672), 2, 2, 336) == TileGrid(2, 2, 672, 672)  # exact: unchanged
    assert fit_grid((200, 400), 1, 2, 336) == TileGrid(1, 2, 336, 672)  # upscaled to fit
    assert fit_grid((100, 400), 2, 3, 336).width <= 3 * 336


def test_tiling_refuses_small_images_and_absurd_grids():
    with pytest.raises(DataError, match="smaller than one 336 px tile"):
        fit_grid((300, 200), 2, 2, 336)
    with pytest.raises(ConfigError, match="more than"):
        fit_grid((1000, 1000), 9, 9, 336)
    with pytest.raises(ConfigError, match="rows, cols >= 1"):
        fit_grid((1000, 1000), 0, 2, 336)
    assert MAX_TILES == 64
    with pytest.raises(DataError, match="do not split"):
        split_views(torch.zeros(1, 3, 31, 32), 2, 2)
    with pytest.raises(DataError, match=r"\(B, C, H, W\)"):
        split_views(torch.zeros(3, 32, 32), 2, 2)


def test_pad_to_grid_puts_the_image_top_left_and_fills_the_rest():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    image = Image.fromarray(arr, "RGB")
    grid = TileGrid(2, 3, 40, 50)  # no resize: the pixels must come through exactly
    canvas = np.asarray(pad_to_grid(image, grid, 32, (1, 2, 3)))
    assert canvas.shape == (64, 96, 3)
    assert np.array_equal(canvas[:40, :50], arr)
    rest = np.ones(canvas.shape[:2], bool)
    rest[:40, :50] = False
    assert (canvas[rest] == np.array([1, 2, 3], np.uint8)).all()
    resized = pad_to_grid(image, TileGrid(2, 3, 60, 75), 32, (0, 0, 0))
    assert resized.size == (96, 64)


def test_views_are_the_low_res_canvas_then_every_tile_exactly_once():
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 2 * 8, 3 * 8, generator=g, dtype=torch.float64)
    views = split_views(pixels, 2, 3)
    assert views.shape == (2 * 7, 3, 8, 8)
    views = views.reshape(2, 7, 3, 8, 8)
    low = F.interpolate(pixels, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(views[:, 0], low)
    # Reassemble the canvas from the tiles by explicit coordinates: every pixel, once.
    canvas = torch.full_like(pixels, float("nan"))
    for t in range(6):
        r, c = divmod(t, 3)  # row-major
        region = canvas[:, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8]
        assert torch.isnan(region).all()  # not written before
        region.copy_(views[:, 1 + t])
    assert torch.equal(canvas, pixels)
    # The low view of a constant canvas is that constant (weights sum to one).
    flat = split_views(torch.full((1, 3, 16, 16), 0.25), 2, 2)
    assert torch.allclose(flat, torch.full_like(flat, 0.25))
