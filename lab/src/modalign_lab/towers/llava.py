"""Assemble trained CLIP vision tower + Llama LM + fresh 2-layer MLP into a real LLaVA model."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPModel,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
)

from modalign.errors import DataError

# "default" drops CLS, as LLaVA-1.5 does; the processor then expands <image> to num_patches.
FEATURE_STRATEGY = "default"
FEATURE_LAYER = -1  # the tiny tower's last layer (a 3-layer tower has little to spare)


def build_image_processor(image_size: int):
    """CLIP-style preprocessing built offline: resize + centre crop to image_size, scale to [-1, 1]."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": image_size},
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )


def build_processor(
    tokenizer: PreTrainedTokenizerBase, image_size: int, patch_size: int
) -> LlavaProcessor:
    """LlavaProcessor whose <image> expansion matches the model's image-token count."""
    return LlavaProcessor(
        image_processor=build_image_processor(image_size),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy=FEATURE_STRATEGY,
        chat_template=tokenizer.chat_template,
        image_token=tokenizer.image_token,
        num_additional_image_tokens=1,  # CLS
    )


def llava_from_towers(
    clip: CLIPModel, lm: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, seed: int
) -> LlavaForConditionalGeneration:
    """LLaVA with the given towers' weights and a connector initialised from `seed`."""
    # Drop "_name_or_path" (where the towers were loaded from) so saved bytes do not depend on it.
    vision = {k: v for k, v in clip.config.vision_config.to_dict().items() if k != "_name_or_path"}
    text = {k: v for k, v in lm.config.to_dict().items() if k != "_name_or_path"}
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy=FEATURE_STRATEGY,
        vision_feature_layer=FEATURE_LAYER,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    config.vision_config.model_type = "clip_vision_model"
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    reset_connector(model, seed)
    return model


def reset_connector(model, seed: int) -> None:
    """Re-initialise the model's connector in place from `seed` (fresh-connector baselines), by
    the library's rule (`modalign.methods.connectors.reset_connector`): a registered connector
    resets itself; HF LLaVA's own two-layer projector gets nn.Linear's default ranges drawn from
    `seed`, the rule the shipped default was built with."""
    from modalign.methods.connectors import reset_connector as reset

    reset(model.model.multi_modal_projector, seed)


def load_llava(path: Path):
    """(model, processor) of a saved lab (or any LLaVA-family) model, extensions re-attached."""
    from modalign.models import load_model, load_processor

    path = Path(path)
    if not (path / "config.json").is_file():
        raise DataError(f"{path} is not a saved model directory (no config.json)")
    return load_model(str(path), torch.device("cpu"), torch.float32), load_processor(str(path))


def save_llava(model, processor, out: Path) -> Path:
    """The one model writer (`modalign.models.checkpoint.save_model`), replacing `out`."""
    from modalign.models import save_model

    return save_model(model, processor, out, overwrite=True)
