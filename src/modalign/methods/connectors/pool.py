"""`pool`: adaptive average pooling of the square patch grid, then Linear(Dv, D).

The "8x8 average pooling" connector of the contrastive-alignment paper read as MM1 does: the
24x24 CLIP grid is pooled adaptively to 8x8 = 64 tokens (docs/methods.md). The target grid is
clipped to the input grid, so a small tower is never upsampled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modalign.errors import ModelError
from modalign.methods.connectors.base import CONNECTORS, Connector, positive


@dataclasses.dataclass(frozen=True)
class PoolOptions:
    """grid: side of the output grid (grid x grid tokens, clipped to the input grid)."""

    grid: int = 8

    def __post_init__(self) -> None:
        positive("connector pool", grid=self.grid)


def grid_side(num_tokens: int) -> int:
    """The side of a square grid of `num_tokens` patches; ModelError when it is not square."""
    side = math.isqrt(num_tokens)
    if num_tokens < 1 or side * side != num_tokens:
        raise ModelError(
            f"connector pool needs a square patch grid, got {num_tokens} vision tokens "
            "(a CLS token kept by vision_feature_select_strategy='full' makes the count non-square)"
        )
    return side


@CONNECTORS.register("pool")
class PoolConnector(nn.Module, Connector):
    """(B, s*s, Dv) -> adaptive_avg_pool2d to g x g -> (B, g*g, Dv) -> Linear -> (B, g*g, D)."""

    Options = PoolOptions

    def __init__(self, vision_dim: int, text_dim: int, options: PoolOptions) -> None:
        super().__init__()
        self.proj = nn.Linear(vision_dim, text_dim)
        self._remember("pool", options)

    @classmethod
    def from_options(cls, name: str, options: Any, *, vision_dim: int, text_dim: int,
                     num_vision_tokens: int, vocab_size: int | None) -> PoolConnector:  # fmt: skip
        grid_side(num_vision_tokens)  # refuse a non-square grid at build time
        return cls(vision_dim, text_dim, options)

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        return min(options.grid, grid_side(num_input_tokens)) ** 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, n, d = features.shape
        side = grid_side(n)
        out = min(self.options.grid, side)
        grid = features.transpose(1, 2).reshape(b, d, side, side)  # (B, Dv, s, s), row-major
        pooled = F.adaptive_avg_pool2d(grid, out)  # (B, Dv, g, g)
        tokens = pooled.flatten(2).transpose(1, 2)  # (B, g*g, Dv)
        return self.proj(tokens)  # (B, g*g, D)

    def reset_parameters(self) -> None:
        """torch's default nn.Linear init."""
        self.proj.reset_parameters()
