"""Build a tiny `transformers.CLIPModel` whose text tower uses the lab tokenizer."""

from __future__ import annotations

from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerBase

from modalign_lab.towers.specs import ClipSpec


def build_clip(tokenizer: PreTrainedTokenizerBase, spec: ClipSpec, seed: int) -> CLIPModel:
    """Freshly initialised CLIP (dropout 0 so training is a pure function of the seed)."""
    import torch

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.text_hidden,
        "intermediate_size": 4 * spec.text_hidden,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.heads,
        "max_position_embeddings": spec.max_text_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,  # pooled position (must not be 2, see tokenizer)
        "projection_dim": spec.projection_dim,
    }
    vision = {
        "hidden_size": spec.vision_hidden,
        "intermediate_size": 4 * spec.vision_hidden,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.heads,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "projection_dim": spec.projection_dim,
    }
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=spec.projection_dim)
    torch.manual_seed(seed)
    return CLIPModel(config)
