"""The plain `llava` form of a modalign_llava model whose connector is LLaVA's own projector, and
the way back.

transformers' LLaVA projector is linear_1 -> activation -> linear_2. `mlp2x_gelu` is exactly that
with GELU (the same `F.gelu`); `linear` and `mlp1x_gelu` are written with the `linear`
activation and linear_2 the identity with a zero bias, which reproduces W x + b bit for bit (every
output is 1 * y plus exact zeros), as `modalign assemble` writes LLaVA-1 projectors. Deeper MLPs
and every other connector have no llava form.

The written config records the connector (`modalign_written_from`, a key transformers ignores),
so modalign's loader gives back the modalign_llava model that was saved (`restore`): a `linear`
connector stays one layer when training goes on.

    model, processor = to_llava(connector_model, connector_processor)   # views, for saving
    model = to_connector_llava(llava_model, "linear")                    # and back
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from modalign.errors import ModelError
from modalign.methods.connectors import ConnectorSpec
from modalign.methods.connectors.mlp import mlp_depth
from modalign.methods.extension_record import recorded_extensions
from modalign.models.surgery.connector_llava import (
    MODEL_TYPE,
    ConnectorLlavaProcessor,
    config_connector,
    connector_llava_config,
    connector_model,
    processor_token_count,
)
from modalign.models.surgery.llava_projector import parse_projector, projector_state

__all__ = [
    "WRITTEN_FROM",
    "connector_depth",
    "llava_model",
    "llava_processor",
    "llava_refusal",
    "to_connector_llava",
    "to_llava",
]

# Key of a config.json written in another form than the model's own: what it was written from
# ({"model_type": ..., "connector": ...}), so modalign's loader gives that model back.
WRITTEN_FROM = "modalign_written_from"
# Connector depth (linear layers) -> transformers' projector_hidden_act for it.
ACTIVATION = {1: "linear", 2: "gelu"}
# Keys of the config that describe a modalign_llava model and not a llava one.
CONNECTOR_KEYS = ("connector", "vision_seq_length")


def connector_depth(spec: ConnectorSpec | str | Mapping[str, Any]) -> int | None:
    """How many linear layers the token-wise MLP `spec` is (linear: 1), None for other kinds."""
    spec = ConnectorSpec.coerce(spec)
    return 1 if spec.name == "linear" else mlp_depth(spec.name)


def llava_refusal(config: Mapping[str, Any], processor: Any = None) -> str | None:
    """Why a model with this config (a `to_dict()` or config.json) cannot be written as plain
    llava, or None when it can; with `processor`, its token count is checked too."""
    model_type = config.get("model_type")
    if model_type not in ("llava", MODEL_TYPE):
        return f"a {model_type!r} model is not a LLaVA model"
    records = recorded_extensions(config)
    if "moca" in records:
        return (
            "MoCa cannot be folded into Llama weights: it scales and shifts the image tokens' "
            "hidden states after every decoder layer, which no weight of a plain llava model can do"
        )
    if records:
        return (
            f"plain llava has no place for the attached {', '.join(records)} (a kept LoRA: merge "
            "it into the weights first)"
        )
    if model_type == "llava":
        return None
    spec = ConnectorSpec.from_dict(config["connector"])
    if connector_depth(spec) not in ACTIVATION:
        return (
            f"connector {spec.name} is not LLaVA's projector: transformers' llava projector is "
            "Linear -> activation -> Linear, which holds mlp2x_gelu and linear (mlp1x_gelu) only"
        )
    if processor is not None:
        llava = llava_processor(processor)
        count = processor_token_count(llava)
        if count != config.get("image_seq_length"):
            return (
                f"a LlavaProcessor made from this processor expands <image> into {count} tokens, "
                f"not the model's {config.get('image_seq_length')}"
            )
    return None


def llava_processor(processor: Any) -> Any:
    """A LlavaProcessor with `processor`'s parts (the same objects) and token settings."""
    from transformers import LlavaProcessor

    if not isinstance(processor, ConnectorLlavaProcessor):
        return processor
    return LlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        chat_template=processor.chat_template,
        image_token=processor.image_token,
        num_additional_image_tokens=processor.num_additional_image_tokens,
    )


def _connector_state(connector: torch.nn.Module, depth: int) -> dict[str, torch.Tensor]:
    """The connector's tensors under LLaVA's mm_projector names (linear: weight, bias)."""
    state = dict(connector.state_dict())
    if depth == 1 and "0.weight" in state:  # mlp1x_gelu: Sequential(Linear) -> one Linear's keys
        state = {k.removeprefix("0."): v for k, v in state.items()}
    return state


def to_llava(model: Any, processor: Any = None) -> tuple[Any, Any]:
    """The plain LlavaForConditionalGeneration (+ LlavaProcessor) computing what the
    modalign_llava `model` computes (`llava_model`), its config recording the connector it was
    written from; a llava model is returned as it is. ModelError when there is no llava form
    (`llava_refusal` says why)."""
    config = model.config.to_dict()
    reason = llava_refusal(config, processor)
    if reason is not None:
        raise ModelError(f"no plain llava form: {reason}")
    if config["model_type"] == "llava":
        return model, processor
    connector = next(model.model.multi_modal_projector.parameters())
    tower = next(model.model.vision_tower.parameters())
    if connector.dtype != tower.dtype:  # modalign casts the features; transformers' llava not
        raise ModelError(
            f"no plain llava form: the connector is in {connector.dtype} and the vision tower in "
            f"{tower.dtype}; transformers' llava feeds the tower's output to its projector as it is"
        )
    llava = llava_model(model)
    setattr(
        llava.config, WRITTEN_FROM, {"model_type": MODEL_TYPE, "connector": config["connector"]}
    )
    return llava, llava_processor(processor) if processor is not None else None


def llava_model(model: Any) -> Any:
    """The LlavaForConditionalGeneration that a modalign_llava `model` with a linear,
    mlp1x_gelu or mlp2x_gelu connector is: its tower, LLM and lm_head (the same modules) and a
    new projector holding the connector's weights. Other config keys (an extension record)
    are kept; the modules of attached extensions are not carried over."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = model.config.to_dict()
    spec = ConnectorSpec.from_dict(config["connector"])
    depth = connector_depth(spec)
    if depth not in ACTIVATION:
        raise ModelError(f"connector {spec.name} has no llava projector form")
    connector = model.model.multi_modal_projector
    weights = parse_projector(_connector_state(connector, depth), "linear" if depth == 1 else None)
    dim = model.config.text_config.hidden_size
    skip = (*CONNECTOR_KEYS, "model_type", "architectures", "transformers_version",
            "_name_or_path", "auto_map", WRITTEN_FROM)  # fmt: skip
    data = {k: v for k, v in config.items() if k not in skip}
    data.update(projector_hidden_act=ACTIVATION[depth], multimodal_projector_bias=weights.bias)
    llava_config = LlavaConfig(**data)
    with torch.device("meta"):  # skeleton only; the real parts are put in below
        llava = LlavaForConditionalGeneration(llava_config)
    llava.model.vision_tower = model.model.vision_tower
    llava.model.language_model = model.model.language_model
    llava.lm_head = model.lm_head
    llava.config.vision_config = model.model.vision_tower.config
    llava.config.text_config = model.model.language_model.config
    ref = weights.state["linear_1.weight"]
    projector = type(llava.model.multi_modal_projector)(llava_config).to(ref.device, ref.dtype)
    projector.load_state_dict(projector_state(weights, dim), strict=True)
    llava.model.multi_modal_projector = projector
    if getattr(model, "generation_config", None) is not None:
        llava.generation_config = model.generation_config
    llava.train(model.training)
    return llava


def _projector_layers(model: Any, depth: int) -> dict[str, torch.Tensor]:
    """The llava projector's tensors under the names of a `depth`-layer connector, or ModelError
    when its layers are not what such a connector writes (other activation, a second layer that
    is not the identity)."""
    config = model.config
    projector = model.model.multi_modal_projector
    act = config.projector_hidden_act
    if ACTIVATION.get(depth) != act:
        raise ModelError(f"its projector's activation is {act!r}, not {ACTIVATION.get(depth)!r}")
    if not config.multimodal_projector_bias:
        raise ModelError("its projector has no biases (modalign's connectors have them)")
    first, second = projector.linear_1, projector.linear_2
    if depth == 2:
        return {"0.weight": first.weight, "0.bias": first.bias,
                "2.weight": second.weight, "2.bias": second.bias}  # fmt: skip
    eye = torch.eye(second.weight.shape[0], dtype=second.weight.dtype, device=second.weight.device)
    if not (torch.equal(second.weight, eye) and not second.bias.any()):
        raise ModelError("its projector's second layer is not the identity any more")
    return {"weight": first.weight, "bias": first.bias}


def to_connector_llava(model: Any, spec: ConnectorSpec | str | Mapping[str, Any]) -> Any:
    """The modalign_llava model with connector `spec` (linear, mlp1x_gelu or mlp2x_gelu) that a
    llava `model` computes: the same tower, LLM, lm_head and attached MoCa (module objects
    shared) and a connector holding the projector's weights. ModelError when the projector is not
    that connector."""
    spec = ConnectorSpec.coerce(spec)
    depth = connector_depth(spec)
    if depth not in ACTIVATION:
        raise ModelError(f"a llava projector is never a {spec.name} connector")
    state = _projector_layers(model, depth)
    if depth == 1 and spec.name != "linear":
        state = {f"0.{k}": v for k, v in state.items()}
    config = connector_llava_config(model.config, spec)
    if hasattr(config, WRITTEN_FROM):
        delattr(config, WRITTEN_FROM)
    ref = model.model.multi_modal_projector.linear_1.weight
    connector = config_connector(config).to(ref.device, ref.dtype)
    connector.load_state_dict(state, strict=True)
    new = connector_model(model, config, connector)
    moca = getattr(model, "moca", None)
    if moca is not None:  # its hooks stay on the shared decoder layers and on `model`
        new.add_module("moca", moca)
    return new
