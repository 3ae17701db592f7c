"""The world's glyph legibility probe: a linear probe that separates what is separable, and
glyph features from the low-res cell and the cell's tile."""

from __future__ import annotations

import pytest
import torch

from modalign.errors import DataError
from modalign.lab.default import default_model_path
from modalign.lab.legibility import glyph_features, glyph_legibility, linear_probe
from modalign.lab.llava import load_llava
from modalign.lab.world.dataset import load_split
from modalign.lab.world.vocab import GLYPHS


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
