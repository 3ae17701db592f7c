"""Model adapters: (model, processor, image/text pairs) -> per-layer hidden states and masks.

adapter = load_adapter("llava-hf/llava-1.5-7b-hf")       # or a local path
batch = adapter.prepare(pairs, template="chat")
states = adapter.forward(batch)                           # LayerStates
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modalign.errors import DataError
from modalign.models.adapters import families  # noqa: F401  (fills ADAPTERS)
from modalign.models.adapters.base import VLMAdapter
from modalign.models.adapters.registry import ADAPTERS, REFUSED, adapter_class_for
from modalign.models.adapters.states import LayerStates, ModelBatch

__all__ = [
    "ADAPTERS",
    "REFUSED",
    "LayerStates",
    "ModelBatch",
    "VLMAdapter",
    "adapter_class_for",
    "check_local_path",
    "get_adapter",
    "load_adapter",
]


def get_adapter(model: Any, processor: Any) -> VLMAdapter:
    """The adapter for an already-loaded model and its processor (chosen by config.model_type)."""
    return adapter_class_for(model.config)(model, processor)


def check_local_path(path_or_id: str) -> None:
    """A name that can only be a local path (absolute, ./ ../ ~, or more than one '/') must
    exist: say so, rather than letting the hub client call it a malformed repo id."""
    if Path(path_or_id).expanduser().exists():
        return
    if (
        Path(path_or_id).is_absolute()
        or path_or_id.startswith((".", "~"))
        or path_or_id.count("/") > 1
    ):
        raise DataError(f"no model folder at {path_or_id!r} (and it cannot be a hub id)")


def load_adapter(
    path_or_id: str,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> VLMAdapter:
    """Load model + processor with `from_pretrained` (auto: CUDA bf16, else CPU float32).

    A family that cannot be scored is refused from its config, before any weights are loaded.
    """
    from transformers import AutoConfig

    from modalign.models.loading import (
        NO_REMOTE_CODE,
        load_model,
        load_processor,
        refuse_remote_code,
        resolve_device_dtype,
    )

    check_local_path(str(path_or_id))
    refuse_remote_code(str(path_or_id))  # also makes AutoConfig know modalign_llava checkpoints
    config = AutoConfig.from_pretrained(str(path_or_id), **NO_REMOTE_CODE)
    adapter_cls = adapter_class_for(config)
    dev, dt = resolve_device_dtype(device, dtype)
    model = load_model(str(path_or_id), dev, dt)
    processor = load_processor(str(path_or_id))
    return adapter_cls(model, processor)
