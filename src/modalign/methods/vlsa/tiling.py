"""High-resolution input as encoder-sized tiles plus one low-resolution view (VLSA §3.1).

A model has one grid of R x C tiles (its cap; VLSA's default 2 x 2). An image is scaled, aspect
kept, to fit that grid (`fit_grid`), padded on the bottom and right to the whole grid
(`pad_to_grid`, in pixel space, with the processor's mean colour) and, once normalised, split
into views (`split_views`): first the whole padded canvas resized to one tile (the
low-resolution view), then the tiles in row-major order.

    grid = fit_grid((480, 640), rows=2, cols=2, tile=336)   # TileGrid(2, 2, height=504, width=672)
    canvas = pad_to_grid(image, grid, tile=336, fill=(122, 116, 104))   # PIL, 672 x 672
    views = split_views(pixels, rows=2, cols=2)   # (B, 3, 672, 672) -> (B * 5, 3, 336, 336)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image

from modalign.errors import ConfigError, DataError

__all__ = ["MAX_TILES", "TileGrid", "check_tile_count", "fit_grid", "pad_to_grid", "split_views"]

# More tiles than this per image is refused: at 576 tokens a tile the vision tower alone would
# encode 37,000 tokens per image (LLaVA-OneVision's largest any-res grid is 6 x 6 = 36).
MAX_TILES = 64


class TileGrid(NamedTuple):
    """`rows` x `cols` tiles holding the image scaled to `height` x `width` px (top-left)."""

    rows: int
    cols: int
    height: int
    width: int


def check_tile_count(rows: int, cols: int, where: str = "tiling") -> None:
    """ConfigError unless 1 <= rows * cols <= MAX_TILES with both >= 1."""
    if rows < 1 or cols < 1:
        raise ConfigError(f"{where}: a tile grid needs rows, cols >= 1, got {rows} x {cols}")
    if rows * cols > MAX_TILES:
        raise ConfigError(
            f"{where}: {rows} x {cols} = {rows * cols} tiles per image is more than {MAX_TILES}; "
            "cap the grid (VLSA's default is 2 x 2)"
        )


def fit_grid(size: tuple[int, int], rows: int, cols: int, tile: int) -> TileGrid:
    """Where an image of `size` = (height, width) goes on a `rows` x `cols` grid of `tile` px
    tiles: scaled (aspect kept, up or down) to the largest size that fits, at the top-left.

    An image smaller than one tile in both directions is refused: tiling it would only upsample
    what the low-resolution view already shows.
    """
    height, width = size
    check_tile_count(rows, cols, "fit_grid")
    if tile < 1:
        raise ConfigError(f"tile size must be >= 1 px, got {tile}")
    if height < 1 or width < 1:
        raise DataError(f"image of {width}x{height} px has no pixels")
    if height < tile and width < tile:
        raise DataError(
            f"image of {width}x{height} px is smaller than one {tile} px tile: high-resolution "
            "tiling has nothing to add (render or collect larger images, or use a "
            "low-resolution connector)"
        )
    scale = min(rows * tile / height, cols * tile / width)
    h = min(rows * tile, max(1, round(height * scale)))
    w = min(cols * tile, max(1, round(width * scale)))
    return TileGrid(rows, cols, h, w)


def pad_to_grid(
    image: Image.Image, grid: TileGrid, tile: int, fill: tuple[int, int, int]
) -> Image.Image:
    """`image` resized to grid.height x grid.width (if it differs) at the top-left of a
    (rows * tile) x (cols * tile) canvas filled with `fill`: bottom and right padding only."""
    image = image.convert("RGB")
    if image.size != (grid.width, grid.height):
        image = image.resize((grid.width, grid.height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (grid.cols * tile, grid.rows * tile), tuple(fill))
    canvas.paste(image, (0, 0))
    return canvas


def split_views(pixels: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, C, rows*h, cols*w) -> (B * (1 + rows*cols), C, h, w): per image the whole canvas
    resized to h x w (bilinear, antialiased), then its tiles row by row.

    Resizing is linear with weights summing to one, so it commutes with the per-channel
    normalisation the image processor applied before.
    """
    check_tile_count(rows, cols, "split_views")
    if pixels.ndim != 4:
        raise DataError(f"split_views expects (B, C, H, W) pixels, got shape {tuple(pixels.shape)}")
    b, c, height, width = pixels.shape
    if height % rows or width % cols:
        raise DataError(
            f"pixels of {height}x{width} do not split into {rows} x {cols} equal tiles; pad the "
            "image to the grid first (pad_to_grid)"
        )
    h, w = height // rows, width // cols
    low = F.interpolate(pixels, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    tiles = pixels.reshape(b, c, rows, h, cols, w).permute(0, 2, 4, 1, 3, 5)  # (B, R, C', c, h, w)
    tiles = tiles.reshape(b, rows * cols, c, h, w)  # (B, m, c, h, w)
    views = torch.cat([low.unsqueeze(1), tiles], dim=1)  # (B, 1 + m, c, h, w)
    return views.reshape(b * (1 + rows * cols), c, h, w)
