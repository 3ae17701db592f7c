"""Is the world's fine detail legible where VLSA says it should be? A linear probe of glyph
identity on the frozen vision tower's features of (a) the low-resolution view's patches over the
glyph's cell and (b) the glyph cell's own full-resolution tile. A high-resolution world is a fair
VLSA test bed only if (b) reads the glyph and (a) does so much worse. With `connector=True`
the probe reads (c) what the LLM receives instead: the pre-trained connector's output tokens
that carry the glyph's cell (does SA-Perceiver deliver the tile's detail into its l tokens?).

    modalign lab legibility --model runs/pt/model --data runs/data288
    modalign lab legibility --model runs/vlsa/sa_perceiver/seed0/pretrain/model --data runs/data288 --connector
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from modalign.errors import ConfigError, DataError
from modalign_lab.world.dataset import Record, load_split
from modalign_lab.world.vocab import GLYPHS, GRID


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
        low.append(patches[0, cell_patch_indices(patches.shape[1], r.scene.glyph_cell)].flatten())
        tile.append(patches[1].flatten())
        labels.append(GLYPHS.index(r.scene.glyph))
    if not labels:
        raise DataError("no record has a glyph")
    return torch.stack(low), torch.stack(tile), torch.tensor(labels)


def cell_patch_indices(n: int, cell: int) -> list[int]:
    """Row-major indices of the patches over world cell `cell` in a square grid of N patches."""
    side = math.isqrt(n)
    if side * side != n or side % GRID:
        raise DataError(f"the tower's patch grid ({n} patches) does not tile the world's "
                        f"{GRID} x {GRID} cells")  # fmt: skip
    k, (row, col) = side // GRID, divmod(cell, GRID)
    return [(row * k + i) * side + col * k + j for i in range(k) for j in range(k)]


def cell_token_indices(connector: Any, m: int, n: int, cell: int) -> list[int]:
    """Which of a connector's M output tokens carry world cell `cell` (row-major, GRID x GRID),
    given N tower patches per view: the cell's patches where the output keeps the patch grid
    (M = N, or N + 1 with a trailing global token), and for a tiled connector also the cell's own
    tile (views: low-res first, then tiles row-major; one tile per cell)."""
    grid = cell_patch_indices(n, cell)
    if m == n or (m == n + 1 and getattr(connector, "global_token", False)):
        return grid
    views = getattr(connector, "view_grid", None)
    if views is not None and m == (1 + views[0] * views[1]) * n:
        if tuple(views) != (GRID, GRID):
            raise DataError(f"a {views[0]} x {views[1]} tile grid does not match the world's "
                            f"{GRID} x {GRID} cells")  # fmt: skip
        return grid + list(range((1 + cell) * n, (2 + cell) * n))
    raise DataError(
        f"the connector's {m} output tokens keep no spatial layout of the {n} "
        "patches (e.g. a Q-Former or resampler): no cell to probe"
    )


@torch.no_grad()
def connector_glyph_features(
    model: Any, processor: Any, records: Sequence[Record], batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every record with a glyph: the connector's output tokens over the glyph's cell,
    flattened (N, T*D), and the glyph labels (N,)."""
    from modalign.methods.sea import vision_tokens
    from modalign.models import vision_token_count

    connector = model.model.multi_modal_projector
    n = vision_token_count(model.config)
    with_glyph = [r for r in records if r.scene.glyph is not None]
    if not with_glyph:
        raise DataError("no record has a glyph")
    feats = []
    for start in range(0, len(with_glyph), batch_size):
        batch = with_glyph[start : start + batch_size]
        tokens = vision_tokens(model, processor, [r.load_image().convert("RGB") for r in batch])
        for r, t in zip(batch, tokens, strict=True):  # t: (M, D)
            feats.append(t[cell_token_indices(connector, t.shape[0], n, r.scene.glyph_cell)]
                         .flatten().float().cpu())  # fmt: skip
    labels = torch.tensor([GLYPHS.index(r.scene.glyph) for r in with_glyph])
    return torch.stack(feats), labels


@torch.no_grad()
def vae_glyph_features(
    model: Any, processor: Any, vae: Any, records: Sequence[Record], batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every record with a glyph: VLSA's reconstruction target over the glyph's cell (the
    frozen VAE's latent mode, (N, C*k*k)), the tower's tile features of that cell cut from the
    VAE's decoded image (N, P*D), and the glyph labels (N,). Is the detail in the target, and
    does it survive the autoencoder's round trip?"""
    from PIL import Image

    from modalign_lab.towers.diffusion import as_vae_input, record_images

    tower, layer = model.model.vision_tower, model.config.vision_feature_layer
    size = vae.config.sample_size
    with_glyph = [r for r in records if r.scene.glyph is not None]
    if not with_glyph:
        raise DataError("no record has a glyph")
    latents, tiles = [], []
    for start in range(0, len(with_glyph), batch_size):
        batch = with_glyph[start : start + batch_size]
        x = as_vae_input(record_images(batch, size))  # (B, 3, S, S) in [-1, 1]
        z = vae.encode(x).latent_dist.mode()  # (B, C, s, s)
        decoded = ((vae.decode(z).sample.clamp(-1, 1) + 1) * 127.5).round().byte()  # (B,3,S,S)
        k, c = z.shape[-1] // GRID, size // GRID
        crops = []
        for r, zi, image in zip(batch, z, decoded, strict=True):
            row, col = divmod(r.scene.glyph_cell, GRID)
            latents.append(zi[:, row * k : (row + 1) * k, col * k : (col + 1) * k].flatten())
            cell = image[:, row * c : (row + 1) * c, col * c : (col + 1) * c]  # (3, c, c)
            crops.append(Image.fromarray(cell.permute(1, 2, 0).numpy()))
        pixels = processor.image_processor(crops, return_tensors="pt")["pixel_values"]
        states = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        tiles.extend(states[:, 1:].flatten(1))  # (B, P*D) without CLS
    labels = torch.tensor([GLYPHS.index(r.scene.glyph) for r in with_glyph])
    return torch.stack(latents).float(), torch.stack(tiles), labels


def glyph_legibility(
    model_dir: Path, data: Path, n_train: int = 1500, *, connector: bool = False,
    vae: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Probe accuracy of glyph identity from the low-res cell and from the cell's tile (or,
    with `connector`, from the connector's tokens over the cell; with `vae`, an AutoencoderKL
    folder, from its latent over the cell and from the tile of its decoded image), fitted on the
    first `n_train` training images and scored on the test split."""
    from modalign_lab.towers.llava import load_llava

    if connector and vae is not None:
        raise ConfigError("probe the connector or the VAE, not both")
    model, processor = load_llava(Path(model_dir))
    model.eval()
    if vae is not None:
        from diffusers import AutoencoderKL

        autoencoder = AutoencoderKL.from_pretrained(Path(vae)).eval()
        (*train, y_train), (*test, y_test) = (
            vae_glyph_features(model, processor, autoencoder, load_split(data, split, limit))
            for split, limit in (("train", n_train), ("test", None))
        )
        sets = {"vae_latent_cell": (train[0], test[0]), "vae_decoded_tile": (train[1], test[1])}
    elif connector:
        (x_train, y_train), (x_test, y_test) = (
            connector_glyph_features(model, processor, load_split(data, split, limit))
            for split, limit in (("train", n_train), ("test", None))
        )
        sets = {"llm_input_cell": (x_train, x_test)}
    else:
        (*train, y_train), (*test, y_test) = (
            glyph_features(model, processor, load_split(data, split, limit))
            for split, limit in (("train", n_train), ("test", None))
        )
        sets = {"low_res_cell": (train[0], test[0]), "tile": (train[1], test[1])}
    out: dict[str, Any] = {"chance": 1 / len(GLYPHS), "n_train": len(y_train),
                           "n_test": len(y_test)}  # fmt: skip
    for name, (a, b) in sets.items():
        out[name] = linear_probe(a, y_train, b, y_test, len(GLYPHS))
    if connector:
        out["tokens_per_cell"] = x_train.shape[1] // model.config.text_config.hidden_size
    return out
