"""Assemble an HF LLaVA model from the parts of an original LLaVA-style pre-training run.

Parts: a base LLM folder (HF format, with its tokenizer), a CLIP vision tower folder (a full
`CLIPModel` or a `CLIPVisionModel` checkpoint) and the connector weights saved by the run
(`mm_projector.bin` or `.safetensors`, keys like `model.mm_projector.0.weight`). The result is
a `LlavaForConditionalGeneration` + `LlavaProcessor` that the MIR adapters load like any hub
LLaVA model; optionally saved with `save_pretrained` (written to a temporary folder, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modalign.atomic import atomic_dir
from modalign.errors import ConfigError, DataError, ModelError
from modalign.models.loading import NO_REMOTE_CODE, parse_dtype, refuse_remote_code
from modalign.models.processor_compat import torchvision_available
from modalign.models.sequence import VICUNA_V1_SYSTEM
from modalign.models.surgery.llava_projector import (
    ProjectorWeights,
    check_projector_shapes,
    parse_projector,
    projector_state,
)

PROJECTOR_FILES = ("mm_projector.bin", "mm_projector.safetensors")
# LLaVA's `mm_vision_select_feature` -> transformers' `vision_feature_select_strategy`.
SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}
# LLaVA-1.5's conversation format (conv_vicuna_v1): "SYSTEM USER: <image>\n... ASSISTANT: ...</s>".
VICUNA_V1_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text'] -%}"
    "{%- set loop_messages = messages[1:] -%}"
    '{%- else -%}{%- set system = "' + VICUNA_V1_SYSTEM + '" -%}'
    "{%- set loop_messages = messages -%}{%- endif -%}"
    "{{- system -}}"
    "{%- for message in loop_messages -%}"
    "{{- ' ' + message['role'].upper() + ': ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<IMAGE>\n' -}}{%- endif -%}{%- endfor -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- part['text'] -}}{%- endgeneration -%}"
    "{%- else -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- ' ASSISTANT:' -}}{%- endif -%}"
)


def _projector_file(path: Path) -> Path:
    """The weights file: `path` itself, or mm_projector.bin/.safetensors inside a run folder."""
    if path.is_dir():
        for name in PROJECTOR_FILES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"no {' or '.join(PROJECTOR_FILES)} in folder {os.fspath(path)!r}")
    if not path.is_file():
        raise DataError(f"projector weights {os.fspath(path)!r} do not exist")
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load tensors safely: safetensors, or `torch.load(weights_only=True)` (no arbitrary pickles)."""
    file = Path(path)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(os.fspath(file), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise DataError(f"cannot read safetensors file {os.fspath(file)!r}: {exc}") from exc
    if file.suffix not in (".bin", ".pt", ".pth"):
        raise DataError(f"{os.fspath(file)!r}: expected a .bin, .pt, .pth or .safetensors file")
    try:
        state = torch.load(os.fspath(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for non-tensor pickles, RuntimeError for garbage
        raise DataError(
            f"cannot read {os.fspath(file)!r} as a tensor state dict (loaded with "
            f"weights_only=True; arbitrary pickles are refused): {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{os.fspath(file)!r} does not hold a dict of tensors")
    return state


def _run_config(projector: Path) -> dict[str, Any]:
    """The pre-training run's config.json next to the connector weights (mm_* keys), if any."""
    folder = projector if projector.is_dir() else projector.parent
    config = folder / "config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"run config {os.fspath(config)!r} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _vision_class(vision_config: Any) -> type:
    """The transformers class that AutoModel would build for this vision config."""
    from transformers import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(vision_config)]
    except KeyError as exc:
        raise ModelError(f"unsupported vision tower type {vision_config.model_type!r}") from exc


def load_vision_tower(vision_tower: str | os.PathLike[str], dtype: torch.dtype) -> Any:
    """Load the vision encoder from a CLIP (or SigLIP) model / vision-model folder."""
    from transformers import AutoConfig

    folder = Path(vision_tower)
    if not folder.is_dir():
        raise DataError(f"vision tower folder {os.fspath(folder)!r} does not exist")
    refuse_remote_code(str(folder))
    config = AutoConfig.from_pretrained(folder, **NO_REMOTE_CODE)
    vision_config = getattr(config, "vision_config", None) or config
    if not hasattr(vision_config, "patch_size") or not hasattr(vision_config, "image_size"):
        raise ModelError(
            f"{os.fspath(folder)!r} is not a ViT-style vision tower ({config.model_type})"
        )
    composite = vision_config is not config  # e.g. a full CLIPModel: its text tower is skipped
    with _quiet_transformers(composite):
        model, info = _vision_class(vision_config).from_pretrained(
            folder, config=vision_config, dtype=dtype, output_loading_info=True, **NO_REMOTE_CODE
        )
    _check_loaded(info, f"vision tower {os.fspath(folder)!r}")
    return model


@contextlib.contextmanager
def _quiet_transformers(enabled: bool) -> Iterator[None]:
    """Silence transformers' load report (the expected unused text-tower keys), then restore."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    if enabled:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _check_loaded(info: dict[str, Any], what: str) -> None:
    """Refuse a checkpoint that left weights randomly initialised (missing or mismatched keys)."""
    missing = list(info.get("missing_keys") or [])
    mismatched = [
        str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys") or []
    ]
    if missing or mismatched:
        names = ", ".join((missing + mismatched)[:5])
        raise ModelError(f"{what}: checkpoint lacks or mismatches weights ({names} ...)")


def _check_causal_lm(llm: Path) -> None:
    """Refuse an LLM folder whose config is not a causal language model (clear message, early)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    refuse_remote_code(str(llm))
    config = AutoConfig.from_pretrained(llm, **NO_REMOTE_CODE)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelError(
            f"LLM folder {os.fspath(llm)!r} holds a {config.model_type!r} model, not a causal LM"
        )


def _resolve_dtype(dtype: torch.dtype | str, llm: Path) -> torch.dtype:
    """`auto` -> the LLM checkpoint's dtype (float32 if unrecorded); names as `parse_dtype`."""
    if dtype == "auto":
        from transformers import AutoConfig

        recorded = getattr(AutoConfig.from_pretrained(llm, **NO_REMOTE_CODE), "dtype", None)
        dtype = recorded if isinstance(recorded, torch.dtype) else str(recorded or "float32")
    return parse_dtype(dtype)


def _image_processor(vision_tower: Path, image_size: int, pad_to_square: bool) -> Any:
    """The tower's own preprocessor if saved, else CLIP preprocessing at the tower's resolution."""
    if torchvision_available():
        from transformers import CLIPImageProcessor as ClipProcessor
        from transformers import LlavaImageProcessor as PadProcessor
    else:
        from transformers.models.clip.image_processing_pil_clip import (
            CLIPImageProcessorPil as ClipProcessor,
        )
        from transformers.models.llava.image_processing_pil_llava import (
            LlavaImageProcessorPil as PadProcessor,
        )
    kwargs: dict[str, Any] = {
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
    }
    saved = vision_tower / "preprocessor_config.json"
    if saved.is_file():
        data = json.loads(saved.read_text())
        for key in ("image_mean", "image_std", "resample", "size", "crop_size"):
            if key in data:
                kwargs[key] = data[key]
    processor = PadProcessor(do_pad=True, **kwargs) if pad_to_square else ClipProcessor(**kwargs)
    crop = processor.crop_size
    crop_hw = (
        (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop.height, crop.width)
    )
    if crop_hw != (image_size, image_size):
        raise ModelError(
            f"image preprocessor crops to {crop_hw} but the vision tower expects "
            f"{image_size}x{image_size}; the number of image tokens would not match"
        )
    return processor


def _add_tokens(tokenizer: Any, image_token: str) -> int:
    """Add the image token (and a pad token if missing) as special tokens; returns the image id."""
    from tokenizers import AddedToken

    tokenizer.add_tokens(
        [AddedToken(image_token, special=True, normalized=False)], special_tokens=True
    )
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    ids = tokenizer.encode(image_token, add_special_tokens=False)
    if len(ids) != 1:
        raise ModelError(f"image token {image_token!r} does not encode to one token: {ids}")
    return int(ids[0])


def _grow_vocab(causal_lm: Any, size: int) -> None:
    """Resize embeddings (and an untied head) to `size`; new rows = mean of the old ones.

    Deterministic and cheap, unlike transformers' default of sampling from the embeddings'
    covariance (a d x d Cholesky, ~40 s for d=4096 on a small CPU, and random per assembly).
    """
    old = causal_lm.get_input_embeddings().weight.shape[0]
    if size <= old:
        return
    causal_lm.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        layers = {
            id(m): m
            for m in (causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings())
            if m is not None
        }
        for module in layers.values():
            weight = module.weight
            weight[old:] = weight[:old].mean(dim=0, keepdim=True)
            bias = getattr(module, "bias", None)
            if bias is not None:
                bias[old:] = bias[:old].mean()


def _save(model: Any, processor: Any, out_dir: Path) -> None:
    """save_pretrained of both into a temporary folder renamed into place (all or nothing)."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)


@dataclass(frozen=True)
class _Options:
    """Connector type, vision layer and token selection after applying the run's config.json."""

    projector_type: str | None
    layer: int
    strategy: str


def _resolve_options(
    projector: Path, projector_type: str | None, layer: int | None, strategy: str | None
) -> _Options:
    """Explicit arguments win; then the run's mm_* config; then LLaVA-1.5 defaults (-2, patch)."""
    run = _run_config(projector) if projector.exists() else {}
    chosen = strategy or SELECT_FEATURE.get(run.get("mm_vision_select_feature", "patch"), "")
    if chosen not in ("default", "full"):
        raise ConfigError(
            f"vision_feature_select_strategy must be 'default' or 'full' (or the run's "
            f"mm_vision_select_feature 'patch' / 'cls_patch'), got {strategy or chosen!r}"
        )
    layer = layer if layer is not None else run.get("mm_vision_select_layer", -2)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ConfigError(f"vision_feature_layer must be an integer, got {layer!r}")
    return _Options(projector_type or run.get("mm_projector_type"), layer, chosen)


def _has_cls(vision: Any) -> bool:
    """Whether the vision tower prepends a CLS token (CLIP does, SigLIP does not)."""
    base = getattr(vision, "vision_model", vision)  # older transformers nest the transformer
    return getattr(getattr(base, "embeddings", None), "class_embedding", None) is not None


def _check_vision(vision: Any, options: _Options) -> None:
    """The vision layer must exist and the 'default' strategy needs a CLS token to drop."""
    n_layers = vision.config.num_hidden_layers
    if not -n_layers - 1 <= options.layer <= n_layers:
        raise ModelError(
            f"vision_feature_layer {options.layer} is out of range for a {n_layers}-layer tower"
        )
    if options.strategy == "default" and not _has_cls(vision):
        raise ModelError(
            "the vision tower has no CLS token; use vision_feature_select_strategy='full'"
        )


def _llava_model(
    vision: Any,
    causal_lm: Any,
    weights: ProjectorWeights,
    options: _Options,
    image_token_id: int,
    pad_token_id: int,
) -> Any:
    """Put the loaded towers and the connector into a LlavaForConditionalGeneration (no copies)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vcfg = vision.config
    patches = (vcfg.image_size // vcfg.patch_size) ** 2
    keeps_cls = options.strategy == "full" and _has_cls(vision)
    config = LlavaConfig(
        vision_config=vcfg.to_dict(),
        text_config=causal_lm.config.to_dict(),
        image_token_id=image_token_id,
        image_seq_length=patches + int(keeps_cls),
        projector_hidden_act="gelu" if weights.projector_type == "mlp2x_gelu" else "linear",
        vision_feature_layer=options.layer,
        vision_feature_select_strategy=options.strategy,
        multimodal_projector_bias=weights.bias,
        tie_word_embeddings=bool(getattr(causal_lm.config, "tie_word_embeddings", False)),
    )
    config.text_config.pad_token_id = config.pad_token_id = pad_token_id
    dtype = causal_lm.dtype
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)  # skeleton only; real parts swapped in below
    model.model.vision_tower = vision
    model.model.language_model = causal_lm.get_decoder()
    model.lm_head = causal_lm.get_output_embeddings()
    projector = type(model.model.multi_modal_projector)(config)  # real tensors on CPU
    projector.load_state_dict(projector_state(weights, config.text_config.hidden_size), strict=True)
    model.model.multi_modal_projector = projector.to(dtype)
    model.generation_config = causal_lm.generation_config
    model.config.dtype = dtype
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise RuntimeError(f"assembly left tensors unset: {', '.join(still_meta[:5])}")
    return model.eval()


def assemble_llava(
    llm: str | os.PathLike[str],
    vision_tower: str | os.PathLike[str],
    projector: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    projector_type: str | None = None,
    vision_feature_layer: int | None = None,
    vision_feature_select_strategy: str | None = None,
    image_token: str = "<image>",
    dtype: torch.dtype | str = "auto",
    pad_to_square: bool = False,
    chat_template: str | None = VICUNA_V1_TEMPLATE,
) -> tuple[Any, Any]:
    """Build (LlavaForConditionalGeneration, LlavaProcessor) from an LLM, a CLIP tower and a connector.

    `projector` is the weights file or the run folder holding `mm_projector.bin` (its
    config.json, if present, supplies mm_projector_type, mm_vision_select_layer and
    mm_vision_select_feature). Arguments left as None fall back to that config, then to
    LLaVA-1.5's choices: the type inferred from the keys, layer -2, patch tokens only ("default").
    Cheap checks (folders, connector keys and shapes) run before the LLM is loaded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaProcessor

    llm_dir, tower_dir, projector_path = Path(llm), Path(vision_tower), Path(projector)
    if not llm_dir.is_dir():
        raise DataError(f"LLM folder {os.fspath(llm_dir)!r} does not exist")
    _check_causal_lm(llm_dir)
    options = _resolve_options(
        projector_path, projector_type, vision_feature_layer, vision_feature_select_strategy
    )
    weights = parse_projector(
        read_state_dict(_projector_file(projector_path)), options.projector_type
    )
    torch_dtype = _resolve_dtype(dtype, llm_dir)
    vision = load_vision_tower(tower_dir, torch_dtype)
    _check_vision(vision, options)
    causal_lm, info = AutoModelForCausalLM.from_pretrained(
        llm_dir, dtype=torch_dtype, output_loading_info=True, **NO_REMOTE_CODE
    )
    _check_loaded(info, f"LLM {os.fspath(llm_dir)!r}")
    check_projector_shapes(weights, vision.config.hidden_size, causal_lm.config.hidden_size)

    tokenizer = AutoTokenizer.from_pretrained(llm_dir, **NO_REMOTE_CODE)
    image_token_id = _add_tokens(tokenizer, image_token)
    _grow_vocab(causal_lm, len(tokenizer))
    model = _llava_model(
        vision, causal_lm, weights, options, image_token_id, tokenizer.pad_token_id
    )
    processor = LlavaProcessor(
        image_processor=_image_processor(tower_dir, vision.config.image_size, pad_to_square),
        tokenizer=tokenizer,
        patch_size=vision.config.patch_size,
        vision_feature_select_strategy=options.strategy,
        chat_template=chat_template.replace("<IMAGE>", image_token) if chat_template else None,
        image_token=image_token,
        num_additional_image_tokens=int(_has_cls(vision)),
    )
    if out_dir is not None:
        _save(model, processor, Path(out_dir))
    return model, processor
