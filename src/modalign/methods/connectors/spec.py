"""`ConnectorSpec`: a connector's registry name + options, JSON-serialisable and CLI-parseable.

    ConnectorSpec.parse("qformer:num_queries=32,text_input=instruction")
    ConnectorSpec.coerce({"name": "pool", "options": {"grid": 8}})
    spec.to_dict()        # {"name": "qformer", "options": {"num_queries": 32, ...}}
    str(spec)             # "qformer:num_queries=32,text_input=instruction"

Names and options are checked when a spec is made: an unknown name or option is a ConfigError
that lists the choices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from modalign.errors import ConfigError
from modalign.methods.connectors.base import CONNECTORS, Connector, parse_options
from modalign.methods.connectors.mlp import MLPConnector, mlp_depth
from modalign.settings import parse_spec, spec_from

__all__ = ["ConnectorSpec", "connector_class", "token_wise_projector"]


def connector_class(name: str) -> type[Connector]:
    """The class registered for `name`; `mlp<N>x_gelu` for any N >= 1 is the MLP connector."""
    if name in CONNECTORS:
        return CONNECTORS[name]
    if mlp_depth(name) is not None:
        return MLPConnector
    choices = ", ".join(CONNECTORS.names())
    raise ConfigError(
        f"unknown connector {name!r}; choose one of: {choices} (or mlp<N>x_gelu for any N >= 1)"
    )


@dataclasses.dataclass(frozen=True)
class ConnectorSpec:
    """A connector type and its options (only those given; `resolved()` fills in the defaults)."""

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"connector name must be a non-empty string, got {self.name!r}")
        parsed = self.parsed_options()  # validates name and options
        given = {k: getattr(parsed, k) for k in self.options}
        object.__setattr__(self, "options", given)  # coerced values ("32" -> 32)

    @property
    def connector_class(self) -> type[Connector]:
        return connector_class(self.name)

    def parsed_options(self) -> Any:
        """The connector's `Options` dataclass instance (defaults for options not given)."""
        cls = self.connector_class
        return parse_options(cls.Options, dict(self.options), f"connector {self.name}")

    def resolved(self) -> ConnectorSpec:
        """The same spec with every option spelled out (what a saved model config records)."""
        return ConnectorSpec(self.name, dataclasses.asdict(self.parsed_options()))

    def output_tokens(self, num_vision_tokens: int) -> int:
        """M, the number of tokens this connector makes from `num_vision_tokens` vision tokens."""
        return self.connector_class.output_tokens(
            self.name, self.parsed_options(), num_vision_tokens
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {"name": ..., "options": {...}}."""
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def parse(cls, text: str) -> ConnectorSpec:
        """From a CLI string `name` or `name:key=value,key=value` (`modalign.settings.parse_spec`)."""
        parts = parse_spec(text, "connector", positional=False)
        return cls(parts.name, dict(parts.options))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConnectorSpec:
        """From the JSON form; ConfigError for other keys."""
        extra = sorted(set(data) - {"name", "options"})
        if extra or "name" not in data:
            raise ConfigError(
                f"connector dict needs 'name' and optional 'options', got keys {sorted(data)}"
            )
        options = data.get("options") or {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"connector options must be a mapping, got {options!r}")
        return cls(data["name"], dict(options))

    @classmethod
    def coerce(cls, value: ConnectorSpec | str | Mapping[str, Any]) -> ConnectorSpec:
        """A spec from a spec, a CLI string or the JSON form."""
        return spec_from(cls, value, "connector", cls.from_dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


def token_wise_projector(name: str, vision_dim: int, text_dim: int, tokens: int, where: str) -> Any:
    """A connector that maps each token on its own (linear, mlp<N>x_gelu), for connectors that
    project tokens they produced themselves; ConfigError for one that changes the token count."""
    spec = ConnectorSpec.parse(name)
    cls = spec.connector_class
    options = spec.parsed_options()
    if cls.output_tokens(spec.name, options, tokens) != tokens:
        raise ConfigError(
            f"{where}: projector {name!r} changes the token count; use a token-wise one "
            "(linear, mlp<N>x_gelu)"
        )
    return cls.from_options(spec.name, options, vision_dim=vision_dim, text_dim=text_dim,
                            num_vision_tokens=tokens, vocab_size=None)  # fmt: skip
