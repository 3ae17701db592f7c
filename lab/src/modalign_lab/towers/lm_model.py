"""Build a tiny `transformers.LlamaForCausalLM` over the lab tokenizer."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from modalign_lab.towers.specs import LMSpec


def build_lm(tokenizer: PreTrainedTokenizerBase, spec: LMSpec, seed: int) -> LlamaForCausalLM:
    """Freshly initialised decoder (untied head, no dropout)."""
    import torch

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
