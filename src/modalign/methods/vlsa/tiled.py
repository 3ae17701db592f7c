"""`tiled`: every view's tokens to the LLM (LLaVA-NeXT any-resolution without newline tokens).

The high-resolution baseline of VLSA's Table 3: the same views as `sa_perceiver` (the low-res
view, then R x C tiles; `methods.vlsa.tiling.split_views`), each token projected on its own, so the LLM
sees (1 + R*C) * N image tokens: five times the low-resolution count at 2 x 2.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from modalign.methods.connectors.base import CONNECTORS, Connector, per_image_views
from modalign.methods.connectors.spec import token_wise_projector
from modalign.methods.vlsa.tiling import check_tile_count

__all__ = ["TiledConnector", "TiledOptions"]


@dataclasses.dataclass(frozen=True)
class TiledOptions:
    """Grid of high-res tiles and the token-wise projector."""

    grid_rows: int = 2
    grid_cols: int = 2
    projector: str = "mlp2x_gelu"

    def __post_init__(self) -> None:
        check_tile_count(self.grid_rows, self.grid_cols, "connector tiled")


@CONNECTORS.register("tiled")
class TiledConnector(nn.Module, Connector):
    """(I * (1 + R*C), N, Dv) views -> (I, (1 + R*C) * N, D), views in order."""

    Options = TiledOptions

    def __init__(self, vision_dim: int, text_dim: int, num_tokens: int, options: TiledOptions):
        super().__init__()
        self.num_tokens = num_tokens
        self.view_grid = (options.grid_rows, options.grid_cols)  # read by the model's tiling
        self.projector = token_wise_projector(
            options.projector, vision_dim, text_dim, num_tokens, "connector tiled"
        )
        self._remember("tiled", options)

    @classmethod
    def from_options(cls, name: str, options: Any, *, vision_dim: int, text_dim: int,
                     num_vision_tokens: int, vocab_size: int | None) -> TiledConnector:  # fmt: skip
        return cls(vision_dim, text_dim, num_vision_tokens, options)

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        return (1 + options.grid_rows * options.grid_cols) * num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = per_image_views(features, self.view_grid, self.num_tokens, "tiled")  # (I, V, N, Dv)
        out = self.projector(x.flatten(0, 1))  # (I * V, N, D)
        return out.reshape(x.shape[0], -1, out.shape[-1])  # (I, V * N, D)

    def reset_parameters(self) -> None:
        """The projector's own initialisation."""
        self.projector.reset_parameters()
