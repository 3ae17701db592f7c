"""`tiled`: every view's tokens, each projected on its own, views in order."""

from __future__ import annotations

import pytest
import torch

from modalign.errors import ConfigError, ModelError
from modalign.methods.connectors import build_connector


def test_every_view_is_projected_in_order():
    module = build_connector("tiled:grid_rows=1,grid_cols=3", 8, 6, 9, seed=0)
    assert module.num_output_tokens(9) == 4 * 9 and module.view_grid == (1, 3)
    features = torch.randn(2 * 4, 9, 8)
    out = module(features)
    assert out.shape == (2, 36, 6)
    for image in range(2):
        for view in range(4):
            expected = module.projector(features[image * 4 + view])  # (N, D)
            assert torch.allclose(out[image, view * 9 : (view + 1) * 9], expected, atol=1e-6)
    with pytest.raises(ModelError, match="4 views"):
        module(torch.randn(5, 9, 8))
    with pytest.raises(ConfigError, match="changes the token count"):
        build_connector("tiled:projector=resampler", 8, 6, 9)


def test_real_size_shapes_on_meta():
    """LLaVA-1.5 sizes at 2 x 2 tiles: 5 x 576 = 2880 image tokens for the LLM."""
    with torch.device("meta"):
        connector = build_connector("tiled", 1024, 4096, 576)
        y = connector(torch.empty(2 * 5, 576, 1024))
    assert y.shape == (2, 2880, 4096)
    assert sum(p.numel() for p in connector.parameters()) == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
