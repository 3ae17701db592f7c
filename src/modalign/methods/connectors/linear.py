"""`linear`: one nn.Linear(Dv, D) per token, LLaVA-1's projector (MIR-paper "1-layer MLP")."""

from __future__ import annotations

from typing import Any

from torch import nn

from modalign.methods.connectors.base import CONNECTORS, Connector, NoOptions


@CONNECTORS.register("linear")
class LinearConnector(nn.Linear, Connector):
    """nn.Linear itself, so LLaVA's `mm_projector` keys (`weight`, `bias`) load directly."""

    Options = NoOptions

    def __init__(self, vision_dim: int, text_dim: int) -> None:
        super().__init__(vision_dim, text_dim)
        self._remember("linear", NoOptions())

    @classmethod
    def from_options(cls, name: str, options: Any, *, vision_dim: int, text_dim: int,
                     num_vision_tokens: int, vocab_size: int | None) -> LinearConnector:  # fmt: skip
        return cls(vision_dim, text_dim)

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        return num_input_tokens

    def reset_parameters(self) -> None:
        """torch's default nn.Linear init (what LLaVA's builder gets)."""
        nn.Linear.reset_parameters(self)
