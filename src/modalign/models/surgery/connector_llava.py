"""A LLaVA whose connector is any registered connector (linear, mlp<N>x_gelu, qformer, ...).

model_type `modalign_llava`: the HF LLaVA classes with `multi_modal_projector` replaced by
`build_connector(config.connector, ...)` (same attribute name, so code that trains or freezes
`model.model.multi_modal_projector` works unchanged). The processor expands `<image>` into the
connector's M tokens (`image_seq_length`), not the tower's patch count.

    register_auto_classes()                      # once, before Auto*.from_pretrained
    model, processor = swap_connector(llava, llava_processor, "qformer:num_queries=32", seed=0)
    model.save_pretrained(d); processor.save_pretrained(d)
    AutoModelForImageTextToText.from_pretrained(d)   # same outputs

The instruction-aware Q-Former reads `connector_input_ids` / `connector_attention_mask`
(one row per image) passed to forward; connectors that take no text ignore them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from PIL import Image
from torch import nn
from transformers import (
    AutoModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaProcessor,
)
from transformers.models.llava.modeling_llava import LlavaPreTrainedModel
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import select_hidden_states

from modalign.errors import ConfigError, DataError, ModelError
from modalign.methods.connectors import Connector, ConnectorSpec, build_connector
from modalign.methods.vlsa.tiling import fit_grid, pad_to_grid, split_views

__all__ = [
    "MODEL_TYPE",
    "ConnectorLlavaConfig",
    "ConnectorLlavaForConditionalGeneration",
    "ConnectorLlavaModel",
    "ConnectorLlavaProcessor",
    "config_connector",
    "connector_llava_config",
    "connector_model",
    "connector_processor",
    "processor_class_named",
    "processor_token_count",
    "register_auto_classes",
    "swap_connector",
]

MODEL_TYPE = "modalign_llava"
DEFAULT_CONNECTOR = "mlp2x_gelu"
# Extra tokens (CLS) a vision tower puts before its patch tokens, by vision config model_type.
CLS_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}
# Families whose connector cannot be swapped, and why.
NOT_SWAPPABLE = {
    "qwen2_vl": "its patch merger (the connector) lives inside the vision tower",
    "qwen2_5_vl": "its patch merger (the connector) lives inside the vision tower",
    "llava_next": "any-resolution tiling adds newline tokens and makes the image token count "
    "depend on the image size",
    "llava_onevision": "any-resolution tiling adds newline tokens and makes the image token count "
    "depend on the image size",
    "idefics3": "its connector is a pixel-shuffle merge tied to image splitting",
    "smolvlm": "its connector is a pixel-shuffle merge tied to image splitting",
    "internvl": "its connector is a pixel-shuffle merge tied to dynamic tiling",
    "paligemma": "its projector is part of a different architecture (bidirectional prefix)",
    "gemma3": "its projector pools to a fixed soft-token count inside the architecture",
    "mllama": "it is a cross-attention model: vision tokens are not in the sequence",
}


def _vision_dim(config: Any) -> int:
    """Width of the features fed to the connector (vision hidden x number of feature layers)."""
    layers = config.vision_feature_layer
    n_layers = 1 if isinstance(layers, int) else len(layers)
    return config.vision_config.hidden_size * n_layers


def vision_token_count(config: Any) -> int:
    """N, the vision tokens per image the connector receives, from a LLaVA config.

    Patches (image_size // patch_size)^2 plus the tower's CLS token, minus one for the
    `default` strategy (HF LLaVA drops the first token there, as LLaVA-1.5 drops CLS).
    """
    vc = config.vision_config
    image_size, patch = getattr(vc, "image_size", None), getattr(vc, "patch_size", None)
    extra = CLS_TOKENS.get(getattr(vc, "model_type", None))
    if not isinstance(image_size, int) or not isinstance(patch, int) or extra is None:
        known = ", ".join(CLS_TOKENS)
        raise ConfigError(
            f"cannot tell how many tokens the vision tower {getattr(vc, 'model_type', None)!r} "
            f"produces (known towers: {known}); pass vision_seq_length explicitly"
        )
    n = (image_size // patch) ** 2 + extra
    return n - 1 if config.vision_feature_select_strategy == "default" else n


@strict
class ConnectorLlavaConfig(LlavaConfig):
    """LlavaConfig + `connector` (a ConnectorSpec dict, all options spelled out) and
    `vision_seq_length` (N, tokens per image into the connector); `image_seq_length` is always
    the connector's M for N (recomputed, so it cannot disagree with the connector)."""

    model_type = MODEL_TYPE

    connector: dict | None = None
    vision_seq_length: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        spec = ConnectorSpec.coerce(self.connector or DEFAULT_CONNECTOR).resolved()
        self.connector = spec.to_dict()
        if self.vision_seq_length is None:
            self.vision_seq_length = vision_token_count(self)
        self.image_seq_length = spec.output_tokens(self.vision_seq_length)

    @property
    def connector_spec(self) -> ConnectorSpec:
        return ConnectorSpec.from_dict(self.connector)


def connector_llava_config(
    config: LlavaConfig, spec: ConnectorSpec | str | Mapping[str, Any]
) -> ConnectorLlavaConfig:
    """A ConnectorLlavaConfig with `config`'s towers, tokens and feature settings and `spec`."""
    data = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path",
                "connector", "image_seq_length", "auto_map"):  # fmt: skip
        data.pop(key, None)
    if config.model_type != MODEL_TYPE:
        data["vision_seq_length"] = vision_token_count(config)
    data["connector"] = ConnectorSpec.coerce(spec).to_dict()
    return ConnectorLlavaConfig(**data)


def config_connector(config: ConnectorLlavaConfig, seed: int | None = None) -> nn.Module:
    """A new connector as `config` describes it: its spec, the vision and LLM widths, N vision
    tokens, the LLM vocabulary (for text-reading connectors); seeded as `build_connector`."""
    return build_connector(
        config.connector,
        _vision_dim(config),
        config.text_config.hidden_size,
        config.vision_seq_length,
        vocab_size=config.text_config.vocab_size,
        seed=seed,
    )


def select_vision_features(
    hidden_states: tuple[torch.Tensor, ...], layer: int | list[int], strategy: str
) -> torch.Tensor:
    """HF LLaVA's feature selection: the chosen layer(s), CLS dropped for `default`."""
    if isinstance(layer, int):
        selected = hidden_states[layer]
        return selected[:, 1:] if strategy == "default" else selected
    pool = [hidden_states[i] for i in layer]
    if strategy == "default":
        pool = [hs[:, 1:] for hs in pool]
    return torch.cat(pool, dim=-1)  # (B, N, Dv * len(layer))


class ConnectorLlavaModel(LlavaModel):
    """LlavaModel with `multi_modal_projector` built from `config.connector`."""

    config: ConnectorLlavaConfig
    config_class = ConnectorLlavaConfig

    def __init__(self, config: ConnectorLlavaConfig) -> None:
        LlavaPreTrainedModel.__init__(self, config)  # not LlavaModel's: no MLP projector
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = config_connector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The connector owns its initialisation (children are visited first, so this wins).
        if isinstance(module, Connector):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    @merge_with_config_defaults
    @can_return_tuple
    @select_hidden_states("vision_feature_layer")
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        connector_input_ids: torch.Tensor | None = None,
        connector_attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Vision tower -> selected features (I, N, Dv) -> connector -> list of I x (M, D)."""
        if image_sizes is not None:
            raise ModelError(
                f"{MODEL_TYPE} takes fixed-size images only (got image_sizes); "
                "variable-resolution towers cannot feed a fixed-size connector"
            )
        connector = self.multi_modal_projector
        grid = getattr(connector, "view_grid", None)
        if grid is not None:  # high-resolution canvas -> low-res view + tiles, one tower batch
            pixel_values = self._views(pixel_values, grid)  # (I * (1 + R*C), 3, h, w)
        outputs = self.vision_tower(pixel_values, return_dict=True, **kwargs)
        selected = select_vision_features(
            outputs.hidden_states, vision_feature_layer, vision_feature_select_strategy
        )  # (I, N, Dv), or (I * (1 + R*C), N, Dv) for a tiled connector
        param = next(connector.parameters(), None)
        if param is not None:
            selected = selected.to(param.dtype)  # a float32 connector on a bf16 tower works
        if getattr(connector, "accepts_text", False) and connector_input_ids is not None:
            if connector_input_ids.shape[0] != selected.shape[0]:
                raise ModelError(
                    f"connector_input_ids has {connector_input_ids.shape[0]} rows for "
                    f"{selected.shape[0]} images; give one row per image"
                )
            features = connector(
                selected, text_ids=connector_input_ids, text_mask=connector_attention_mask
            )
        else:
            features = connector(selected)  # (I, M, D)
        outputs.pooler_output = list(features)
        return outputs

    def _views(self, pixel_values: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(I, 3, R*h, C*w) canvases -> (I * (1 + R*C), 3, h, w) views (h = the tower's size)."""
        rows, cols = grid
        side = self.config.vision_config.image_size
        if tuple(pixel_values.shape[-2:]) != (rows * side, cols * side):
            raise ModelError(
                f"the {rows} x {cols} tiled connector expects {rows * side}x{cols * side} pixel "
                f"canvases (tiles of {side} px), got {tuple(pixel_values.shape[-2:])}; use the "
                "processor saved with the model"
            )
        return split_views(pixel_values, rows, cols)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        *args: Any,
        connector_input_ids: torch.Tensor | None = None,
        connector_attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """LlavaModel.forward; image features come from the connector (with its text, if any)."""
        encoded = kwargs.get("mm_encoder_outputs") or {}
        if pixel_values is not None and encoded.get("image") is None:
            encoded = dict(encoded)
            encoded["image"] = self.get_image_features(
                pixel_values=pixel_values,
                vision_feature_layer=kwargs.get("vision_feature_layer"),
                vision_feature_select_strategy=kwargs.get("vision_feature_select_strategy"),
                image_sizes=kwargs.get("image_sizes"),
                connector_input_ids=connector_input_ids,
                connector_attention_mask=connector_attention_mask,
                return_dict=True,
            )
            kwargs["mm_encoder_outputs"] = encoded
            pixel_values = None
        return super().forward(input_ids, pixel_values, *args, **kwargs)


class ConnectorLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """LlavaForConditionalGeneration around a ConnectorLlavaModel."""

    config: ConnectorLlavaConfig
    config_class = ConnectorLlavaConfig

    def __init__(self, config: ConnectorLlavaConfig) -> None:
        LlavaPreTrainedModel.__init__(self, config)
        self.model = ConnectorLlavaModel(config)
        self.lm_head = nn.Linear(
            config.text_config.hidden_size, config.text_config.vocab_size, bias=False
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        *args: Any,
        connector_input_ids: torch.Tensor | None = None,
        connector_attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """LlavaForConditionalGeneration.forward + the connector's text (one row per image)."""
        if connector_input_ids is not None:
            kwargs["connector_input_ids"] = connector_input_ids
            kwargs["connector_attention_mask"] = connector_attention_mask
        return super().forward(input_ids, pixel_values, *args, **kwargs)


class ConnectorLlavaProcessor(LlavaProcessor):
    """LlavaProcessor that expands `<image>` into exactly `image_seq_length` tokens (the
    connector's M) instead of the tower's patch count.

    With `view_grid` = [R, C] (a tiled connector such as sa_perceiver) each image is first scaled
    to fit and padded (bottom / right, mean colour) onto an R x C canvas of tower-sized tiles;
    the image processor then sizes to that canvas and the model splits it into views.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        patch_size: int | None = None,
        vision_feature_select_strategy: str | None = None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        num_additional_image_tokens: int = 0,
        image_seq_length: int | None = None,
        view_grid: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if view_grid is not None and (
            len(view_grid) != 2 or not all(isinstance(v, int) for v in view_grid)
        ):
            raise ConfigError(f"view_grid must be [rows, cols], got {view_grid!r}")
        if not isinstance(image_seq_length, int) or image_seq_length < 1:
            raise ConfigError(
                f"ConnectorLlavaProcessor needs image_seq_length >= 1, got {image_seq_length!r}"
            )
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )
        self.image_seq_length = image_seq_length
        self.view_grid = list(view_grid) if view_grid is not None else None

    def pad_images(self, images: Any) -> Any:
        """Images placed on the tiled canvas (unchanged without a view grid); PIL images in any
        (nested) list, same structure out. Arrays and tensors are refused: pad them as PIL."""
        if self.view_grid is None:
            return images
        if isinstance(images, (list, tuple)):
            return [self.pad_images(im) for im in images]
        if not isinstance(images, Image.Image):
            raise DataError(
                f"a tiled processor places PIL images on its canvas, got {type(images).__name__}"
            )
        rows, cols = self.view_grid
        tile = _crop_size(self.image_processor)[0] // rows
        fill = tuple(round(255 * m) for m in self.image_processor.image_mean)
        grid = fit_grid((images.height, images.width), rows, cols, tile)
        return pad_to_grid(images, grid, tile, fill)

    def _process_images(self, images: Any, **kwargs: Any) -> Any:
        return super()._process_images(self.pad_images(images), **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs: Any) -> str:
        return self.image_token * self.image_seq_length

    def _get_num_multimodal_tokens(self, image_sizes: Any = None, **kwargs: Any) -> Any:
        from transformers.processing_utils import MultiModalData

        if image_sizes is None:
            return MultiModalData()
        n = len(image_sizes)
        return MultiModalData(
            num_image_tokens=[self.image_seq_length] * n, num_image_patches=[1] * n
        )


def connector_processor(
    processor: Any, image_seq_length: int, view_grid: tuple[int, int] | None = None
) -> ConnectorLlavaProcessor:
    """A ConnectorLlavaProcessor with `processor`'s image processor, tokenizer and template;
    with `view_grid` (R, C), the image processor (a copy) sizes images to the R x C canvas."""
    if not isinstance(processor, LlavaProcessor):
        raise ModelError(
            f"expected a LlavaProcessor (or ConnectorLlavaProcessor), got {type(processor).__name__}"
        )
    image_processor = processor.image_processor
    old_grid = getattr(processor, "view_grid", None)
    if old_grid is not None:  # back to one tile: the canvas size divided by the old grid
        image_processor = _sized_image_processor(image_processor, (1, 1), old_grid)
    if view_grid is not None:
        image_processor = _sized_image_processor(image_processor, view_grid, (1, 1))
    return ConnectorLlavaProcessor(
        image_processor=image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        chat_template=processor.chat_template,
        image_token=processor.image_token,
        num_additional_image_tokens=processor.num_additional_image_tokens,
        image_seq_length=image_seq_length,
        view_grid=list(view_grid) if view_grid is not None else None,
    )


def _crop_size(image_processor: Any) -> tuple[int, int]:
    """(height, width) of the image processor's output (its crop size, a dict or a SizeDict)."""
    crop = image_processor.crop_size
    if isinstance(crop, dict):
        return crop["height"], crop["width"]
    return crop.height, crop.width


def _sized_image_processor(image_processor: Any, grid: Any, old: Any) -> Any:
    """A copy of `image_processor` resizing to grid x tile, tile = its crop size / old grid.

    A canvas is sized exactly (the processor already placed the image on it); back to one tile
    with a center crop, the resize is CLIP's shortest edge again."""
    height, width = _crop_size(image_processor)
    tile_h, tile_w = height // old[0], width // old[1]
    crop = {"height": grid[0] * tile_h, "width": grid[1] * tile_w}
    sized = copy.deepcopy(image_processor)
    one_tile = tuple(grid) == (1, 1) and getattr(sized, "do_center_crop", False)
    sized.size = {"shortest_edge": tile_h} if one_tile else dict(crop)
    sized.crop_size = crop
    return sized


def processor_token_count(processor: Any) -> int | None:
    """Tokens a plain LlavaProcessor expands `<image>` into (N for an MLP projector), if known."""
    if isinstance(processor, ConnectorLlavaProcessor) or not isinstance(processor, LlavaProcessor):
        return None
    if not processor.patch_size:
        return None
    try:
        counts = processor._get_num_multimodal_tokens(image_sizes=[(1, 1)])
        return int(counts["num_image_tokens"][0])
    except (KeyError, TypeError, AttributeError):
        return None


def _check_swappable(model: Any, processor: Any) -> None:
    """ModelError naming the family and why, for a model whose connector cannot be swapped."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ("llava", MODEL_TYPE):
        reason = NOT_SWAPPABLE.get(model_type, "it is not a LLaVA-style tower -> connector -> LLM")
        raise ModelError(
            f"cannot swap the connector of a {model_type!r} model: {reason}; "
            f"supported: llava, {MODEL_TYPE}"
        )
    tower = getattr(model.config.vision_config, "model_type", None)
    if tower not in CLS_TOKENS and model_type == "llava":
        raise ModelError(
            f"cannot swap the connector of this llava model: its vision tower {tower!r} is not a "
            f"fixed-size tower with a known token count ({', '.join(CLS_TOKENS)})"
        )
    expected = processor_token_count(processor)
    if expected is not None and model_type == "llava":
        n = vision_token_count(model.config)
        if expected != n:
            raise ModelError(
                f"the processor expands <image> into {expected} tokens but the llava config "
                f"implies {n} vision tokens; the processor and model disagree"
            )


def swap_connector(
    model: Any,
    processor: Any,
    spec: ConnectorSpec | str | Mapping[str, Any],
    *,
    seed: int = 0,
) -> tuple[ConnectorLlavaForConditionalGeneration, ConnectorLlavaProcessor]:
    """`model` with a fresh connector of `spec` initialised from `seed`, and its processor.

    The vision tower, language model and lm_head are the same module objects (not copies) and
    the checkpoint's vision_feature_layer / strategy are kept. The connector is created in the
    old projector's dtype and on its device. Works on `llava` and `modalign_llava` models.
    """
    _check_swappable(model, processor)
    config = connector_llava_config(model.config, spec)
    old = next(model.model.multi_modal_projector.parameters(), None)
    ref = old if old is not None else next(model.model.language_model.parameters())
    connector = config_connector(config, seed=seed).to(device=ref.device, dtype=ref.dtype)
    new = connector_model(model, config, connector)
    grid = getattr(new.model.multi_modal_projector, "view_grid", None)
    return new, connector_processor(processor, config.image_seq_length, grid)


def connector_model(
    model: Any, config: ConnectorLlavaConfig, connector: nn.Module
) -> ConnectorLlavaForConditionalGeneration:
    """A ConnectorLlavaForConditionalGeneration of `config` made of `model`'s vision tower,
    language model and lm_head (the same module objects, not copies) and `connector`; the
    generation config and train/eval mode are `model`'s."""
    with torch.device("meta"):  # no memory, no init: the big parts are reused below
        new = ConnectorLlavaForConditionalGeneration(config)
    new.model.vision_tower = model.model.vision_tower
    new.model.language_model = model.model.language_model
    new.lm_head = model.lm_head
    new.config.vision_config = model.model.vision_tower.config
    new.config.text_config = model.model.language_model.config
    new.model.multi_modal_projector = connector
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    left = [n for n, t in [*new.named_parameters(), *new.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"the connector model has tensors on the meta device: {left[:5]}")
    new.train(model.training)
    return new


def processor_class_named(name: str) -> type | None:
    """This module's processor class called `name` (for checkpoints' `processor_class`)."""
    return ConnectorLlavaProcessor if name == ConnectorLlavaProcessor.__name__ else None


def register_auto_classes() -> None:
    """Make AutoConfig / AutoModel / AutoModelForImageTextToText / AutoProcessor know
    `modalign_llava` (idempotent; nothing is registered at import time)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    AutoConfig.register(MODEL_TYPE, ConnectorLlavaConfig, exist_ok=True)
    AutoModel.register(ConnectorLlavaConfig, ConnectorLlavaModel, exist_ok=True)
    AutoModelForImageTextToText.register(
        ConnectorLlavaConfig, ConnectorLlavaForConditionalGeneration, exist_ok=True
    )
    AutoProcessor.register(ConnectorLlavaConfig, ConnectorLlavaProcessor, exist_ok=True)
