"""Tiny random vision-language models of every supported family, built offline from configs.

Each builder writes a complete `save_pretrained` directory (safetensors weights, processor,
tokenizer, chat template) that loads back through `AutoModelForImageTextToText` /
`AutoProcessor`, so tests exercise the same path users take. Weights are random (seeded):
these models are for testing code paths, not for meaningful MIR values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modalign.models.processor_compat import processor_class_for
from modalign.registry import Registry

# Sizes shared by all tiny models (close to transformers' own tests).
HIDDEN = 32
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 64
BPE_VOCAB = 320

_CORPUS = [
    "a red circle on the left of a blue square",
    "two green triangles and one yellow star near the top",
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a short caption about a picture.",
    "user assistant system image picture text passage",
    "0123456789 , . ; : ! ? ( ) [ ] - _ / \n",
]

# Families that `build_tiny` knows; filled by the `@TINY_BUILDERS.register(...)` decorators below.
TINY_BUILDERS: Registry[Callable[[Path], None]] = Registry("tiny model family")


def tiny_families() -> list[str]:
    """Names accepted by `build_tiny` (one per supported family)."""
    return TINY_BUILDERS.names()


def build_tiny(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build, seed and save a tiny random model + processor of `family` into `out_dir`."""
    builder = TINY_BUILDERS[family]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    builder(out)
    return out


# --------------------------------------------------------------------------- tokenizer


def _tokenizer(
    specials: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    add_bos: bool,
    named: dict[str, str] | None = None,
    unk: str | None = None,
) -> Any:
    """Train a tiny byte-level BPE with `tokenizers` and wrap it as a transformers tokenizer."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers import trainers as tk_trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Control characters are deleted by the normalizer: lets tests build a passage that
    # tokenizes to zero tokens (e.g. "\x01") the way odd real inputs can.
    tok.normalizer = normalizers.Replace(Regex("[\x00-\x08]"), "")
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    all_specials = list(dict.fromkeys([pad, eos] + ([bos] if bos else []) + specials))
    trainer = tk_trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=all_specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    if add_bos and bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    kwargs: dict[str, Any] = {"eos_token": eos, "pad_token": pad}
    if bos:
        kwargs["bos_token"] = bos
    if unk:
        kwargs["unk_token"] = unk
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, extra_special_tokens=dict(named or {}), **kwargs
    )
    return wrapped


def _text_config(tok: Any, **extra: Any) -> dict[str, Any]:
    """Decoder config numbers shared by all families; vocabulary and special ids from `tok`."""
    cfg = {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 512,
    }
    cfg.update(extra)
    return cfg


def _clip_vision(image_size: int, patch: int, **extra: Any) -> dict[str, Any]:
    """A tiny CLIP/SigLIP-style vision tower config."""
    cfg = {
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "image_size": image_size,
        "patch_size": patch,
    }
    cfg.update(extra)
    return cfg


def _save(model: Any, processor: Any, out: Path) -> None:
    """Save weights as safetensors plus the processor (tokenizer, chat template)."""
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


_CLIP_NORM = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}

# Chat templates in the shape of each family's real template (the real ones are not
# available offline); content items of type "image" / "text" as transformers passes them.
_LLAVA_CHAT = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %} {% else %}ASSISTANT: {% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _chatml(image: str) -> str:
    """A ChatML template (Qwen / OneVision / InternVL style) with a given image placeholder."""
    return (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image + "{% else %}"
        "{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


_IDEFICS_CHAT = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %} {{ c['text'] }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_GEMMA_CHAT = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{% if m['role'] == 'assistant' %}model{% else %}{{ m['role'] }}{% endif %}{{ '\\n' }}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% else %}"
    "{{ c['text'] | trim }}{% endif %}{% endfor %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


# --------------------------------------------------------------------------- builders


def _llava_tokenizer() -> Any:
    """Llama-style: adds BOS, `<image>` placeholder."""
    return _tokenizer(
        ["<image>"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        add_bos=True,
        named={"image_token": "<image>"},
    )


@TINY_BUILDERS.register("llava")
def _build_llava(out: Path) -> None:
    """LLaVA-1.5: CLIP tower (CLS dropped), MLP projector, Llama decoder; 16 image tokens."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _llava_tokenizer()
    ip = CLIPImageProcessorPil(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, **_CLIP_NORM
    )
    proc = LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_CHAT,
    )
    cfg = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **_clip_vision(16, 4)},
        text_config={"model_type": "llama", **_text_config(tok)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    _save(LlavaForConditionalGeneration(cfg), proc, out)


@TINY_BUILDERS.register("llava_next")
def _build_llava_next(out: Path) -> None:
    """LLaVA-NeXT: any-resolution tiling (base + tiles + newline tokens)."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tok = _llava_tokenizer()
    pinpoints = [[16, 16], [16, 32], [32, 16], [32, 32]]
    ip = LlavaNextImageProcessorPil(
        size={"shortest_edge": 16},
        crop_size={"height": 16, "width": 16},
        image_grid_pinpoints=pinpoints,
        **_CLIP_NORM,
    )
    proc = LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=4,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_CHAT,
    )
    cfg = LlavaNextConfig(
        vision_config={"model_type": "clip_vision_model", **_clip_vision(16, 4)},
        text_config={"model_type": "llama", **_text_config(tok)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    _save(LlavaNextForConditionalGeneration(cfg), proc, out)


def _chatml_tokenizer(extra: list[str], named: dict[str, str]) -> Any:
    """Qwen-style: no BOS, ChatML markers, pad = `<|endoftext|>`."""
    specials = ["<|im_start|>", "<|im_end|>", *extra]
    return _tokenizer(
        specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False, named=named
    )


@TINY_BUILDERS.register("llava_onevision")
def _build_llava_onevision(out: Path) -> None:
    """LLaVA-OneVision: SigLIP tower, any-resolution tiles, Qwen2 decoder."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
    )

    tok = _chatml_tokenizer(
        ["<image>", "<video>"], {"image_token": "<image>", "video_token": "<video>"}
    )
    pinpoints = [[16, 16], [16, 32], [32, 16], [32, 32]]
    ip = LlavaOnevisionImageProcessorPil(
        size={"height": 16, "width": 16}, image_grid_pinpoints=pinpoints, **_CLIP_NORM
    )
    proc = processor_class_for(LlavaOnevisionProcessor)(
        image_processor=ip,
        tokenizer=tok,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=_chatml("<image>"),
    )
    cfg = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", **_clip_vision(16, 4)},
        text_config={"model_type": "qwen2", **_text_config(tok)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    _save(LlavaOnevisionForConditionalGeneration(cfg), proc, out)


def _qwen_vl(out: Path, family: str) -> None:
    """Qwen2-VL / Qwen2.5-VL: dynamic-resolution patches merged 2x2, M-RoPE decoder."""
    from transformers import Qwen2VLImageProcessorPil

    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor

        vision = {"depth": LAYERS, "embed_dim": HIDDEN, "num_heads": HEADS, "hidden_size": HIDDEN}
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        from transformers import Qwen2_5_VLProcessor as Processor

        vision = {
            "depth": LAYERS,
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_heads": HEADS,
            "out_hidden_size": HIDDEN,
            "window_size": 16,
            "fullatt_block_indexes": [1],
        }
    vision.update({"patch_size": 4, "spatial_merge_size": 2, "temporal_patch_size": 2})
    marks = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _chatml_tokenizer(marks, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    ip = Qwen2VLImageProcessorPil(
        patch_size=4,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=16 * 16,
        max_pixels=16 * 16,
        size={"shortest_edge": 16 * 16, "longest_edge": 16 * 16},
        **_CLIP_NORM,
    )
    proc = processor_class_for(Processor)(
        image_processor=ip,
        tokenizer=tok,
        chat_template=_chatml("<|vision_start|><|image_pad|><|vision_end|>"),
    )
    head_dim = HIDDEN // HEADS
    text = _text_config(
        tok,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8],
        },
    )
    cfg = Config(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    _save(Model(cfg), proc, out)


@TINY_BUILDERS.register("qwen2_vl")
def _build_qwen2_vl(out: Path) -> None:
    """Qwen2-VL."""
    _qwen_vl(out, "qwen2_vl")


@TINY_BUILDERS.register("qwen2_5_vl")
def _build_qwen2_5_vl(out: Path) -> None:
    """Qwen2.5-VL (windowed vision attention)."""
    _qwen_vl(out, "qwen2_5_vl")


def _idefics_like(out: Path, family: str) -> None:
    """Idefics3 / SmolVLM: pixel-shuffle connector, `<fake_token_around_image>` framing."""
    marks = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tok = _tokenizer(
        marks,
        bos="<|im_start|>" if family == "idefics3" else None,
        eos="<end_of_utterance>",
        pad="<|endoftext|>",
        add_bos=family == "idefics3",
        named={"image_token": "<image>"},
    )
    if family == "idefics3":
        from transformers import Idefics3Config as Config
        from transformers import Idefics3ForConditionalGeneration as Model
        from transformers import Idefics3ImageProcessorPil as ImageProcessor
        from transformers import Idefics3Processor as Processor
    else:
        from transformers import SmolVLMConfig as Config
        from transformers import SmolVLMForConditionalGeneration as Model
        from transformers import SmolVLMImageProcessorPil as ImageProcessor
        from transformers import SmolVLMProcessor as Processor
    ip = ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": 16},
        max_image_size={"longest_edge": 16},
        **_CLIP_NORM,
    )
    # 16x16 image, patch 4 -> 16 patches, pixel shuffle scale 2 -> 4 image tokens.
    video = {"video_processor": None} if family == "smolvlm" else {}
    proc = processor_class_for(Processor)(
        image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=_IDEFICS_CHAT, **video
    )
    cfg = Config(
        vision_config=_clip_vision(16, 4),
        text_config={"model_type": "llama", **_text_config(tok)},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
        pad_token_id=tok.pad_token_id,
    )
    _save(Model(cfg), proc, out)


@TINY_BUILDERS.register("idefics3")
def _build_idefics3(out: Path) -> None:
    """Idefics3."""
    _idefics_like(out, "idefics3")


@TINY_BUILDERS.register("smolvlm")
def _build_smolvlm(out: Path) -> None:
    """SmolVLM (Idefics3 architecture, SmolLM decoder)."""
    _idefics_like(out, "smolvlm")


@TINY_BUILDERS.register("paligemma")
def _build_paligemma(out: Path) -> None:
    """PaliGemma: SigLIP tower, image tokens before BOS, prefix-LM attention."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    tok = _tokenizer(
        ["<image>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        add_bos=True,
        named={"image_token": "<image>"},
    )
    ip = SiglipImageProcessorPil(size={"height": 16, "width": 16}, **_CLIP_NORM)
    ip.image_seq_length = 16
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    cfg = PaliGemmaConfig(
        vision_config={"model_type": "siglip_vision_model", **_clip_vision(16, 4)},
        text_config={"model_type": "gemma", **_text_config(tok, head_dim=HIDDEN // HEADS)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=HIDDEN,
        hidden_size=HIDDEN,
    )
    _save(PaliGemmaForConditionalGeneration(cfg), proc, out)


@TINY_BUILDERS.register("gemma3")
def _build_gemma3(out: Path) -> None:
    """Gemma3: SigLIP tower, pooled to `mm_tokens_per_image` soft tokens framed by boi/eoi."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
    )

    marks = [
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ]
    tok = _tokenizer(
        marks,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        add_bos=True,
        named={
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )
    ip = Gemma3ImageProcessorPil(
        size={"height": 16, "width": 16}, do_pan_and_scan=False, **_CLIP_NORM
    )
    proc = Gemma3Processor(
        image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=_GEMMA_CHAT
    )
    cfg = Gemma3Config(
        vision_config={"model_type": "siglip_vision_model", **_clip_vision(16, 4)},
        text_config={
            "model_type": "gemma3_text",
            **_text_config(tok, head_dim=HIDDEN // HEADS, sliding_window=16),
        },
        mm_tokens_per_image=4,
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
        boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
    )
    _save(Gemma3ForConditionalGeneration(cfg), proc, out)


@TINY_BUILDERS.register("internvl")
def _build_internvl(out: Path) -> None:
    """InternVL: InternViT tower, pixel shuffle, `<img><IMG_CONTEXT>...</img>` framing."""
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
    )

    marks = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = _chatml_tokenizer(
        marks,
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    ip = GotOcr2ImageProcessorPil(
        size={"height": 16, "width": 16}, crop_to_patches=False, **_CLIP_NORM
    )
    proc = processor_class_for(InternVLProcessor)(
        image_processor=ip,
        tokenizer=tok,
        image_seq_length=4,
        chat_template=_chatml("<IMG_CONTEXT>"),
    )
    cfg = InternVLConfig(
        vision_config={
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "image_size": [16, 16],
            "patch_size": [4, 4],
        },
        text_config={"model_type": "qwen2", **_text_config(tok)},
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        downsample_ratio=0.5,
    )
    _save(InternVLForConditionalGeneration(cfg), proc, out)


@TINY_BUILDERS.register("mllama")
def _build_mllama(out: Path) -> None:
    """Mllama (cross-attention): built only so tests can check that adapters refuse it."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    cfg = MllamaConfig(
        vision_config={
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_global_layers": 1,
            "attention_heads": HEADS,
            "image_size": 16,
            "patch_size": 4,
            "intermediate_layers_indices": [0],
            "vision_output_dim": HIDDEN * 2,
            "max_num_tiles": 1,
            "supported_aspect_ratios": [[1, 1]],
        },
        text_config={
            "vocab_size": BPE_VOCAB + 8,
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "cross_attention_layers": [1],
        },
    )
    model = MllamaForConditionalGeneration(cfg)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
