"""The world's glyph legibility probe: a linear probe that separates what is separable, and
glyph features from the low-res cell and the cell's tile."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from modalign_lab.probes.legibility import (
    cell_token_indices,
    connector_glyph_features,
    glyph_features,
    glyph_legibility,
    linear_probe,
    vae_glyph_features,
)
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.dataset import load_split
from modalign_lab.world.vocab import GLYPHS

from modalign.assets import default_model_path
from modalign.errors import ConfigError, DataError


def test_linear_probe_separates_blobs_and_not_noise():
    g = torch.Generator().manual_seed(0)
    centres = 4.0 * torch.randn(4, 8, generator=g)
    y = torch.arange(400) % 4
    x = centres[y] + torch.randn(400, 8, generator=g)
    blobs = linear_probe(x[:300], y[:300], x[300:], y[300:], 4)
    assert blobs["test"] == blobs["train"] == 1.0
    noise = torch.randn(400, 8, generator=g)
    random = linear_probe(noise[:300], y[:300], noise[300:], y[300:], 4)
    assert random["test"] < 0.45  # chance 0.25 on 100 held-out points


def test_glyph_features_from_the_low_res_cell_and_the_tile(tiny_data):
    model, processor = load_llava(default_model_path())  # 96 px tower, 3 x 3 patches of 32 px
    records = load_split(tiny_data, "train")
    low, tile, labels = glyph_features(model, processor, records)
    with_glyph = [r for r in records if r.scene.glyph is not None]
    d = model.config.vision_config.hidden_size
    assert low.shape == (len(with_glyph), d) and tile.shape == (len(with_glyph), 9 * d)
    assert labels.tolist() == [GLYPHS.index(r.scene.glyph) for r in with_glyph]
    # the low-res feature is the glyph cell's own patch of the whole image's encoding
    r = with_glyph[0]
    pixels = processor.image_processor([r.load_image().convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        states = model.model.vision_tower(pixel_values=pixels["pixel_values"],
                                          output_hidden_states=True).hidden_states  # fmt: skip
    patch = states[model.config.vision_feature_layer][0, 1 + r.scene.glyph_cell]
    torch.testing.assert_close(low[0], patch)
    report = glyph_legibility(default_model_path(), tiny_data, n_train=24)
    assert report["n_train"] == len(with_glyph) and report["chance"] == 1 / len(GLYPHS)
    # fitted on the train split's features, scored on the test split's
    test = glyph_features(model, processor, load_split(tiny_data, "test"))
    assert report["n_test"] == len(test[2])
    for i, name in enumerate(("low_res_cell", "tile")):
        assert report[name] == linear_probe(low if i == 0 else tile, labels, test[i], test[2],
                                            len(GLYPHS))  # fmt: skip


def test_a_patch_grid_that_does_not_tile_the_cells_is_refused(tiny_llava, tiny_data):
    model, processor = load_llava(tiny_llava)  # 64 px, patch 16: 4 x 4 patches for 3 x 3 cells
    with pytest.raises(DataError, match="does not tile"):
        glyph_features(model, processor, load_split(tiny_data, "train"))


class _Grid:  # a connector that keeps the patch grid (M = N)
    pass


class _Global:  # N image tokens, then a global token (SA-Perceiver)
    global_token = True


class _Tiled:  # low-res view, then one view per tile
    def __init__(self, rows: int = 3, cols: int = 3) -> None:
        self.view_grid = (rows, cols)


def test_cell_token_indices_by_layout():
    assert cell_token_indices(_Grid(), 9, 9, 4) == [4]
    # 6 x 6 patches on 3 x 3 cells: 2 x 2 patches per cell; cell 5 is row 1, col 2
    assert cell_token_indices(_Grid(), 36, 36, 5) == [16, 17, 22, 23]
    assert cell_token_indices(_Global(), 10, 9, 8) == [8]  # the global token is not the cell's
    assert cell_token_indices(_Tiled(), 90, 9, 2) == [2, *range(27, 36)]  # low-res + tile 2
    with pytest.raises(DataError, match="no spatial layout"):
        cell_token_indices(_Grid(), 32, 9, 0)  # e.g. a 32-query Q-Former
    with pytest.raises(DataError, match="no spatial layout"):
        cell_token_indices(_Grid(), 10, 9, 0)  # N + 1 without a global token
    with pytest.raises(DataError, match="tile grid"):
        cell_token_indices(_Tiled(2, 2), 45, 9, 0)
    with pytest.raises(DataError, match="does not tile"):
        cell_token_indices(_Grid(), 16, 16, 0)  # 4 x 4 patches on 3 x 3 cells


def test_connector_features_are_the_llm_inputs_over_the_cell(tiny_data):
    from modalign.methods.sea.recall import vision_tokens
    from modalign.models.surgery.connector_llava import select_vision_features, swap_connector

    model, processor = load_llava(default_model_path())  # mlp2x_gelu: one token per cell
    records = [r for r in load_split(tiny_data, "train") if r.scene.glyph is not None][:3]
    feats, labels = connector_glyph_features(model, processor, records, batch_size=2)
    tokens = vision_tokens(model, processor, [r.load_image().convert("RGB") for r in records])
    for i, r in enumerate(records):
        torch.testing.assert_close(feats[i], tokens[i, r.scene.glyph_cell])
    assert labels.tolist() == [GLYPHS.index(r.scene.glyph) for r in records]

    # tiled 3 x 3 (288 px canvases): the cell's low-res token, then its own tile's 9 tokens,
    # checked against the tower + projector run on the cell's crop of the canvas directly
    tiled, tproc = swap_connector(model, processor, "tiled:grid_rows=3,grid_cols=3", seed=0)
    tiled.eval()
    big = records[0].load_image().convert("RGB").resize((288, 288))  # the world is 64 px
    # cell 5 (row 1, col 2): off the diagonal, so a column-major tile order would not match
    scene = SimpleNamespace(glyph=records[0].scene.glyph, glyph_cell=5)
    r = SimpleNamespace(scene=scene, load_image=lambda: big)
    feats, _ = connector_glyph_features(tiled, tproc, [r])
    d = tiled.config.text_config.hidden_size
    assert feats.shape == (1, 10 * d)
    canvas = tproc.image_processor([r.load_image().convert("RGB")],
                                   return_tensors="pt")["pixel_values"]  # fmt: skip
    row, col = divmod(r.scene.glyph_cell, 3)
    side = tiled.config.vision_config.image_size
    crop = canvas[:, :, row * side : (row + 1) * side, col * side : (col + 1) * side]
    with torch.no_grad():
        states = tiled.model.vision_tower(crop, output_hidden_states=True).hidden_states
        patches = select_vision_features(states, tiled.config.vision_feature_layer,
                                         tiled.config.vision_feature_select_strategy)  # fmt: skip
        tile = tiled.model.multi_modal_projector.projector(patches)[0]  # (9, D)
    torch.testing.assert_close(feats[0].reshape(10, d)[1:], tile, atol=1e-5, rtol=1e-4)

    # fitted on the train split's connector features, scored on the test split's
    report = glyph_legibility(default_model_path(), tiny_data, n_train=24, connector=True)
    assert set(report) == {"chance", "n_train", "n_test", "llm_input_cell", "tokens_per_cell"}
    train = connector_glyph_features(model, processor, load_split(tiny_data, "train"))
    test = connector_glyph_features(model, processor, load_split(tiny_data, "test"))
    assert (report["n_train"], report["n_test"]) == (len(train[1]), len(test[1]))
    assert report["tokens_per_cell"] == 1
    assert report["llm_input_cell"] == linear_probe(*train, *test, len(GLYPHS))


def _tiny_vae(size: int = 96):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=size,
                         block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2).eval()  # fmt: skip


def test_vae_features_are_the_latent_cell_and_the_decoded_tile(tiny_data, tmp_path):
    import numpy as np
    from PIL import Image

    model, processor = load_llava(default_model_path())  # 96 px tower
    vae = _tiny_vae()  # 96 px -> 48 x 48 latent: 16 x 16 per cell
    records = [r for r in load_split(tiny_data, "train") if r.scene.glyph is not None][:3]
    latent, tile, labels = vae_glyph_features(model, processor, vae, records, batch_size=1)
    assert latent.shape == (3, 4 * 16 * 16) and labels.tolist() == [
        GLYPHS.index(r.scene.glyph) for r in records
    ]
    batched = vae_glyph_features(model, processor, vae, records, batch_size=2)
    torch.testing.assert_close(batched[0], latent, atol=1e-3, rtol=1e-3)  # same order
    r = records[-1]
    image = r.load_image().convert("RGB").resize((96, 96), Image.Resampling.BOX)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].contiguous() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()  # (1, 4, 48, 48)
        decoded = vae.decode(z).sample
    row, col = divmod(r.scene.glyph_cell, 3)
    expected = z[0, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16].flatten()
    torch.testing.assert_close(latent[-1], expected, atol=1e-5, rtol=1e-4)
    # the decoded image's cell (32 px), through the tower at its own size
    pixels = ((decoded[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    crop = Image.fromarray(pixels[row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32])
    inputs = processor.image_processor([crop], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        states = model.model.vision_tower(pixel_values=inputs, output_hidden_states=True)
    want = states.hidden_states[model.config.vision_feature_layer][0, 1:].flatten()
    torch.testing.assert_close(tile[-1], want, atol=1e-5, rtol=1e-4)

    vae.save_pretrained(tmp_path / "vae")
    report = glyph_legibility(default_model_path(), tiny_data, n_train=24, vae=tmp_path / "vae")
    train = vae_glyph_features(model, processor, vae, load_split(tiny_data, "train"))
    test = vae_glyph_features(model, processor, vae, load_split(tiny_data, "test"))
    for i, name in enumerate(("vae_latent_cell", "vae_decoded_tile")):
        assert report[name] == linear_probe(train[i], train[2], test[i], test[2], len(GLYPHS))
    with pytest.raises(ConfigError, match="not both"):
        glyph_legibility(default_model_path(), tiny_data, connector=True, vae=tmp_path / "vae")
