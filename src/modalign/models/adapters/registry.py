"""Adapter registry: one adapter class per `config.model_type`, plus explicit refusals."""

from __future__ import annotations

from typing import Any

from modalign.errors import ModelError
from modalign.registry import Registry

# model_type -> adapter class; filled by `@ADAPTERS.register(...)` in modalign.models.adapters.families,
# which `modalign.models` imports, so the registry is complete once the package is imported.
ADAPTERS: Registry[type] = Registry("model adapter")

# Families whose vision features never enter the decoder's token sequence: MIR (a gap between
# vision and text *tokens* of the same layer) is undefined for them.
REFUSED: dict[str, str] = {
    "mllama": "Mllama feeds image features through cross-attention layers; its decoder sequence "
    "has no vision tokens, so there is nothing to compare text tokens with",
    "idefics": "Idefics (v1) uses Flamingo-style gated cross-attention; images are not tokens in "
    "its decoder sequence",
    "flamingo": "Flamingo-style cross-attention models have no vision tokens in the sequence",
}


def adapter_class_for(config: Any) -> type:
    """The adapter class for a model config, or a ModelError saying why it cannot be scored."""
    model_type = getattr(config, "model_type", None)
    if model_type in REFUSED:
        raise ModelError(f"cannot compute MIR for model_type {model_type!r}: {REFUSED[model_type]}")
    if model_type not in ADAPTERS:
        if (
            getattr(config, "image_token_id", None) is None
            and getattr(config, "image_token_index", None) is None
        ):
            raise ModelError(
                f"cannot compute MIR for model_type {model_type!r}: its config defines no image "
                "token, so vision features are not tokens in the decoder sequence"
            )
        raise ModelError(
            f"no MIR adapter for model_type {model_type!r}; supported: {', '.join(ADAPTERS.names())}"
        )
    return ADAPTERS[model_type]
