"""What every connector shares: the registry, typed options parsed from CLI strings, the interface.

A connector maps vision features (B, N, Dv) to LLM input embeddings (B, M, D). Each registered
class declares an `Options` dataclass (typed fields with defaults); `parse_options` turns raw
values (CLI strings or JSON values) into it with the one settings coercion
(`modalign.settings.coerce`) and refuses unknown names or bad values with a ConfigError that
lists the choices.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.registry import Registry
from modalign.settings import coerce

__all__ = ["CONNECTORS", "Connector", "NoOptions", "parse_options", "per_image_views", "positive"]


class Connector:
    """Interface mixed into every connector `nn.Module` (the registered classes).

    `output_tokens` is a classmethod so a config can know M without building the module.
    """

    Options: ClassVar[type] = None  # type: ignore[assignment]  # a dataclass, set by subclasses
    accepts_text: bool = False  # whether forward takes `text_ids` / `text_mask`
    global_token: bool = False  # whether the last output token summarises the image (pooled)

    @classmethod
    def from_options(
        cls,
        name: str,
        options: Any,
        *,
        vision_dim: int,
        text_dim: int,
        num_vision_tokens: int,
        vocab_size: int | None,
    ) -> nn.Module:
        """Build the module for registry `name` with parsed `options` and the model's sizes."""
        raise NotImplementedError

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        """M, the number of tokens produced from `num_input_tokens` vision tokens."""
        raise NotImplementedError

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """M for this module's settings (instance form of `output_tokens`)."""
        return type(self).output_tokens(self.spec_name, self.options, num_input_tokens)

    def reset_parameters(self) -> None:
        """Re-initialise every parameter (draws from torch's global RNG; see `reset_connector`)."""
        raise NotImplementedError

    def _remember(self, name: str, options: Any) -> None:
        """Keep the registry name and options (for `num_output_tokens` and repr)."""
        self.spec_name = name
        self.options = options


# name -> connector class; `mlp<N>x_gelu` for other N is resolved by `connector_class`.
CONNECTORS: Registry[type[Connector]] = Registry("connector")


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """Options of a connector that has none."""


def parse_options(options_cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """`options_cls(**raw)` with each value coerced to its field's type; unknown names refused."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "none (this connector takes no options)"
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)}; valid options: {valid}"
        )
    hints = typing.get_type_hints(options_cls)
    values = {k: coerce(v, hints[k], f"{where}: option {k}") for k, v in raw.items()}
    return options_cls(**values)


def positive(where: str, **values: int | float | None) -> None:
    """ConfigError unless every given (non-None) value is > 0."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{where}: option {name} must be > 0, got {value}")


def per_image_views(
    features: torch.Tensor, grid: tuple[int, int], num_tokens: int, where: str
) -> torch.Tensor:
    """(I * (1 + R*C), N, D) features of a tiled batch -> (I, 1 + R*C, N, D); ModelError when
    the rows are not whole images of 1 + R*C views or the views have another token count."""
    views = 1 + grid[0] * grid[1]
    n, tokens, width = features.shape
    if n % views or tokens != num_tokens:
        raise ModelError(
            f"{where} expects {views} views (low-res + {grid[0]} x {grid[1]} tiles) of "
            f"{num_tokens} tokens per image, got features of shape {tuple(features.shape)}"
        )
    return features.reshape(n // views, views, tokens, width)
