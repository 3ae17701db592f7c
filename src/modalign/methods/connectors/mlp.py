"""`mlp<N>x_gelu`: LLaVA's MLP projector, Linear(Dv, D) then (N-1) x [GELU, Linear(D, D)]."""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from modalign.errors import ConfigError
from modalign.methods.connectors.base import CONNECTORS, Connector, NoOptions

# LLaVA's `llava/model/multimodal_projector/builder.py` pattern; any N >= 1 is accepted.
MLP_PATTERN = re.compile(r"^mlp(\d+)x_gelu$")


def mlp_depth(name: str) -> int | None:
    """N for a name `mlp<N>x_gelu` (ConfigError for N < 1), None for any other name."""
    match = MLP_PATTERN.match(name)
    if match is None:
        return None
    depth = int(match.group(1))
    if depth < 1:
        raise ConfigError(f"connector {name!r}: an MLP needs at least 1 layer")
    return depth


@CONNECTORS.register("mlp2x_gelu", "mlp4x_gelu")
class MLPConnector(nn.Sequential, Connector):
    """nn.Sequential exactly as LLaVA builds it, so `mm_projector.bin` keys (`0.weight`, `0.bias`,
    `2.weight`, ...) load directly. Registered under the common depths; `connector_class`
    resolves `mlp<N>x_gelu` for every other N to this class too."""

    Options = NoOptions

    def __init__(self, vision_dim: int, text_dim: int, depth: int) -> None:
        layers: list[nn.Module] = [nn.Linear(vision_dim, text_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(text_dim, text_dim)]
        super().__init__(*layers)
        self.depth = depth
        self._remember(f"mlp{depth}x_gelu", NoOptions())

    @classmethod
    def from_options(cls, name: str, options: Any, *, vision_dim: int, text_dim: int,
                     num_vision_tokens: int, vocab_size: int | None) -> MLPConnector:  # fmt: skip
        depth = mlp_depth(name)
        if depth is None:
            raise ConfigError(f"connector {name!r} is not of the form mlp<N>x_gelu")
        return cls(vision_dim, text_dim, depth)

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        return num_input_tokens

    def reset_parameters(self) -> None:
        """torch's default nn.Linear init for every layer (what LLaVA's builder gets)."""
        for layer in self:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
