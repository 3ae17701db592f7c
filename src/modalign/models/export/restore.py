"""modalign's loader gives back the model that was saved, whatever form it was written in: a
folder written in another form than the model's own records what it was written from
(`modalign_written_from`), and the loaded model is turned back into that.

- a plain llava folder written from a modalign_llava model (linear, mlp1x_gelu or mlp2x_gelu
  connector) comes back as that modalign_llava model;
- a custom-code folder written from a plain llava model (to carry MoCa or a kept LoRA) comes
  back as that llava model.

Both run between `from_pretrained` and the re-attachment of the recorded extensions, so MoCa and
a kept LoRA attach to the restored model. A projector changed since (another tool trained the
exported folder) cannot be turned back exactly: the model stays as loaded, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from modalign.errors import ModelError
from modalign.models.export.llava_form import (
    ACTIVATION,
    CONNECTOR_KEYS,
    WRITTEN_FROM,
    llava_model,
    llava_processor,
    to_connector_llava,
)
from modalign.models.surgery.connector_llava import (
    MODEL_TYPE,
    ConnectorLlavaProcessor,
    connector_processor,
    processor_token_count,
)

__all__ = ["restore_model", "restore_processor", "restored_config", "written_from"]


def written_from(config: Any) -> dict[str, Any] | None:
    """The record of what a folder was written from, when that differs from its model_type."""
    get = config.get if isinstance(config, Mapping) else lambda key: getattr(config, key, None)
    record = get(WRITTEN_FROM)
    if not isinstance(record, Mapping) or record.get("model_type") == get("model_type"):
        return None
    return dict(record)


def restored_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """config.json (`config`) as the config of the model modalign's loader gives back, for
    checks made before loading it."""
    record = written_from(config)
    data = {k: v for k, v in config.items() if k != WRITTEN_FROM}
    if record is None:
        return data
    if record.get("model_type") == MODEL_TYPE:
        data.update(model_type=MODEL_TYPE, connector=record.get("connector"))
    elif record.get("model_type") == "llava":
        for key in CONNECTOR_KEYS:
            data.pop(key, None)
        data.update(model_type="llava", projector_hidden_act=ACTIVATION[2])
    return data


def restore_model(model: Any) -> Any:
    """`model` (just loaded, extensions not attached yet) as the model it was written from."""
    record = written_from(model.config)
    if record is None:
        return model
    try:
        if record["model_type"] == MODEL_TYPE and model.config.model_type == "llava":
            restored = to_connector_llava(model, record["connector"])
        elif record["model_type"] == "llava" and model.config.model_type == MODEL_TYPE:
            restored = llava_model(model)
        else:
            raise ModelError(f"modalign cannot turn it into a {record['model_type']!r} model")
    except (ModelError, KeyError) as exc:
        warnings.warn(
            f"the checkpoint was written from a {record.get('model_type')!r} model but {exc}; "
            f"loaded as {model.config.model_type}",
            stacklevel=2,
        )
        return model
    if hasattr(restored.config, WRITTEN_FROM):
        delattr(restored.config, WRITTEN_FROM)
    return restored


def restore_processor(processor: Any, config: Mapping[str, Any]) -> Any:
    """The processor of the model a folder (config.json `config`) was written from: the same
    tokens, in that model's processor class."""
    record = written_from(config)
    if record is None:
        return processor
    if record["model_type"] == MODEL_TYPE and not isinstance(processor, ConnectorLlavaProcessor):
        count = processor_token_count(processor)
        return connector_processor(processor, count) if count else processor
    if record["model_type"] == "llava" and isinstance(processor, ConnectorLlavaProcessor):
        return llava_processor(processor)
    return processor
