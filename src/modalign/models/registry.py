"""Adapter registry: one adapter class per `config.model_type`, plus explicit refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# model_type -> adapter class; filled by `register_adapter` when modalign.models.families loads.
ADAPTERS: dict[str, type] = {}

# Families whose vision features never enter the decoder's token sequence: MIR (a gap between
# vision and text *tokens* of the same layer) is undefined for them.
REFUSED: dict[str, str] = {
    "mllama": "Mllama feeds image features through cross-attention layers; its decoder sequence "
    "has no vision tokens, so there is nothing to compare text tokens with",
    "idefics": "Idefics (v1) uses Flamingo-style gated cross-attention; images are not tokens in "
    "its decoder sequence",
    "flamingo": "Flamingo-style cross-attention models have no vision tokens in the sequence",
}


def register_adapter(*model_types: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make the adapter handle every listed `config.model_type`."""

    def register(cls: type[T]) -> type[T]:
        for name in model_types:
            if name in ADAPTERS:
                raise ValueError(
                    f"model_type {name!r} already has adapter {ADAPTERS[name].__name__}"
                )
            ADAPTERS[name] = cls
        return cls

    return register


def adapter_class_for(config: Any) -> type:
    """The adapter class for a model config, or a ValueError saying why it cannot be scored."""
    import modalign.models.families  # noqa: F401  (registers the adapters)

    model_type = getattr(config, "model_type", None)
    if model_type in REFUSED:
        raise ValueError(f"cannot compute MIR for model_type {model_type!r}: {REFUSED[model_type]}")
    if model_type not in ADAPTERS:
        if (
            getattr(config, "image_token_id", None) is None
            and getattr(config, "image_token_index", None) is None
        ):
            raise ValueError(
                f"cannot compute MIR for model_type {model_type!r}: its config defines no image "
                "token, so vision features are not tokens in the decoder sequence"
            )
        raise ValueError(
            f"no MIR adapter for model_type {model_type!r}; supported: {', '.join(sorted(ADAPTERS))}"
        )
    return ADAPTERS[model_type]
