"""Is the world's fine detail legible where VLSA says it should be? A linear probe of glyph
identity on the frozen vision tower's features of (a) the low-resolution view's patches over the
glyph's cell and (b) the glyph cell's own full-resolution tile. A high-resolution world is a fair
VLSA test bed only if (b) reads the glyph and (a) does so much worse.

    modalign lab legibility --model runs/pt/model --data runs/data288 --grid 3
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from modalign.errors import DataError
from modalign.lab.world.dataset import Record, load_split
from modalign.lab.world.vocab import GLYPHS, GRID


def linear_probe(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
    classes: int, *, l2: float = 1e-3, max_iter: int = 300,
) -> dict[str, float]:  # fmt: skip
    """Multinomial logistic regression (standardised features, L2, L-BFGS): train and test
    accuracy."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd  # (N, D)
    w = torch.zeros(x_train.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ w + b, y_train) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        accuracy = lambda x, y: ((x @ w + b).argmax(1) == y).float().mean().item()  # noqa: E731
        return {"train": accuracy(x_train, y_train), "test": accuracy(x_test, y_test)}


@torch.no_grad()
def glyph_features(
    model: Any, processor: Any, records: Sequence[Record]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every record with a glyph: the low-res view's patch tokens over the glyph's cell
    (N, k*k*D), the glyph cell's tile's patch tokens (N, P*D), and the glyph labels (N,)."""
    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    low, tile, labels = [], [], []
    for r in records:
        if r.scene.glyph is None:
            continue
        image = r.load_image().convert("RGB")
        row, col = divmod(r.scene.glyph_cell, GRID)
        w, h = image.size
        crop = image.crop((col * w // GRID, row * h // GRID, (col + 1) * w // GRID,
                           (row + 1) * h // GRID))  # fmt: skip
        pixels = processor.image_processor([image, crop], return_tensors="pt")["pixel_values"]
        states = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        patches = states[:, 1:]  # (2, P, D) without CLS
        side = int(patches.shape[1] ** 0.5)
        if side * side != patches.shape[1] or side % GRID:
            raise DataError(f"the tower's {side} x {side} patch grid does not tile the world's "
                            f"{GRID} x {GRID} cells")  # fmt: skip
        k = side // GRID
        grid = patches[0].reshape(side, side, -1)  # (side, side, D)
        low.append(grid[row * k : (row + 1) * k, col * k : (col + 1) * k].flatten())
        tile.append(patches[1].flatten())
        labels.append(GLYPHS.index(r.scene.glyph))
    if not labels:
        raise DataError("no record has a glyph")
    return torch.stack(low), torch.stack(tile), torch.tensor(labels)


def glyph_legibility(model_dir: Path, data: Path, n_train: int = 1500) -> dict[str, Any]:
    """Probe accuracy of glyph identity from the low-res cell and from the cell's tile, fitted
    on the first `n_train` training images and scored on the test split."""
    from modalign.lab.llava import load_llava

    model, processor = load_llava(Path(model_dir))
    model.eval()
    train = glyph_features(model, processor, load_split(data, "train", n_train))
    test = glyph_features(model, processor, load_split(data, "test"))
    out: dict[str, Any] = {"chance": 1 / len(GLYPHS), "n_train": len(train[2]),
                           "n_test": len(test[2])}  # fmt: skip
    for i, name in enumerate(("low_res_cell", "tile")):
        out[name] = linear_probe(train[i], train[2], test[i], test[2], len(GLYPHS))
    return out
