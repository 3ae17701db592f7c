"""The custom-code form: a modalign_llava folder that plain transformers loads with
`from_pretrained(folder, trust_remote_code=True)`, following transformers' convention for models
it does not ship: `auto_map` in config.json (and in processor_config.json) names classes in a
Python file inside the folder, here the generated `modeling_modalign_llava.py` (`remote_code`).

Any connector, MoCa and a kept LoRA are written this way. A plain llava model (with MoCa or a
LoRA attached) is written as the modalign_llava model with the `mlp2x_gelu` connector that it
computes, recording that it was a llava model (`restore` turns it back on loading). modalign itself loads these folders natively (its registered classes; the code in
the folder is never run), and without `trust_remote_code` transformers refuses the unknown
model_type instead of silently building a model without the connector or MoCa.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_text
from modalign.errors import ConfigError, ModelError
from modalign.methods.extension_record import recorded_extensions
from modalign.models.export.llava_form import ACTIVATION, WRITTEN_FROM, to_connector_llava
from modalign.models.export.portable import (
    PORTABLE_EXTENSIONS,
    ModalignLlavaForConditionalGeneration,
)
from modalign.models.export.remote_code import MODELING_FILE, modeling_source
from modalign.models.surgery.connector_llava import (
    MODEL_TYPE,
    ConnectorLlavaConfig,
    ConnectorLlavaProcessor,
    connector_processor,
    processor_token_count,
)

__all__ = ["AUTO_MAP", "custom_code_refusal", "to_custom_code", "write_custom_code"]

_MODULE = MODELING_FILE.removesuffix(".py")
# config.json's auto_map: the Auto classes -> classes of the generated file.
AUTO_MAP = {
    "AutoConfig": f"{_MODULE}.{ConnectorLlavaConfig.__name__}",
    "AutoModelForImageTextToText": f"{_MODULE}.{ModalignLlavaForConditionalGeneration.__name__}",
    "AutoProcessor": f"{_MODULE}.{ConnectorLlavaProcessor.__name__}",
}
# The connector a plain llava projector (GELU, biases) is.
LLAVA_CONNECTOR = "mlp2x_gelu"


def custom_code_refusal(config: Mapping[str, Any]) -> str | None:
    """Why a model with this config (a `to_dict()` or config.json) cannot be written in the
    custom-code form, or None when it can."""
    model_type = config.get("model_type")
    if model_type not in ("llava", MODEL_TYPE):
        return (
            f"custom code is generated for LLaVA models (llava, {MODEL_TYPE}) only, not "
            f"{model_type!r}"
        )
    unknown = sorted(set(recorded_extensions(config)) - set(PORTABLE_EXTENSIONS))
    if unknown:
        return f"the exported code cannot rebuild the attached {', '.join(unknown)}"
    if model_type == "llava":
        act, bias = config.get("projector_hidden_act"), config.get("multimodal_projector_bias")
        if act != ACTIVATION[2] or bias is False:
            return (
                f"its projector (activation {act!r}, biases {bias}) is not one of modalign's "
                "connectors"
            )
        try:
            ConnectorLlavaConfig(**_llava_keys(config))  # counts the tower's tokens
        except ConfigError as exc:
            return str(exc)
    return None


def _llava_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The llava config's keys a ConnectorLlavaConfig takes, with LLaVA's own connector."""
    skip = ("model_type", "architectures", "transformers_version", "_name_or_path", "auto_map")
    return {**{k: v for k, v in config.items() if k not in skip}, "connector": LLAVA_CONNECTOR}


def to_custom_code(model: Any, processor: Any = None) -> tuple[Any, Any]:
    """The modalign_llava model (+ ConnectorLlavaProcessor) to write in the custom-code form:
    a modalign_llava model as it is, a llava one as its mlp2x_gelu connector model (modules
    shared; `to_connector_llava`). ModelError when there is none (`custom_code_refusal`)."""
    reason = custom_code_refusal(model.config.to_dict())
    if reason is not None:
        raise ModelError(f"no custom-code form: {reason}")
    if model.config.model_type == MODEL_TYPE:
        return model, processor
    converted = to_connector_llava(model, LLAVA_CONNECTOR)
    setattr(converted.config, WRITTEN_FROM, {"model_type": "llava"})
    if processor is None or isinstance(processor, ConnectorLlavaProcessor):
        return converted, processor
    count = processor_token_count(processor)
    if count != converted.config.image_seq_length:
        raise ModelError(
            f"no custom-code form: the processor expands <image> into {count} tokens but the "
            f"model takes {converted.config.image_seq_length}"
        )
    return converted, connector_processor(processor, count)


def _rewrite_json(path: Path, changes: Mapping[str, Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_custom_code(folder: str | Path) -> None:
    """Put the generated modeling file and the `auto_map` entries into a folder where a
    modalign_llava model (and its processor, if any) was just saved."""
    folder = Path(folder)
    config = folder / "config.json"
    if json.loads(config.read_text(encoding="utf-8")).get("model_type") != MODEL_TYPE:
        raise ModelError(f"{folder} does not hold a {MODEL_TYPE} model")
    atomic_write_text(folder / MODELING_FILE, modeling_source())
    model_class = AUTO_MAP["AutoModelForImageTextToText"].split(".")[-1]
    _rewrite_json(config, {"auto_map": AUTO_MAP, "architectures": [model_class]})
    processor_config = folder / "processor_config.json"
    if processor_config.is_file():
        _rewrite_json(processor_config, {"auto_map": {"AutoProcessor": AUTO_MAP["AutoProcessor"]}})
