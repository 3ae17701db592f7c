"""`qformer`: a BLIP-2 / InstructBLIP Q-Former built from transformers' own classes.

`InstructBlipQFormerModel`: learnable queries (N(0, 0.02)) run through BERT-style layers with
cross-attention to the vision tokens every `cross_attention_frequency` layers (BLIP-2's
`cross_attention_freq=2`); the query outputs go through Linear(Hq, D). Defaults are BERT-base
(the MIR paper initialised its Q-Former from bert-base-uncased; options shrink it).

text_input:
- `none` (default): queries only, as TinyLLaVA does; the text branch (word/position embeddings,
  the text feed-forward of every layer) is removed, so every parameter is used.
- `instruction`: the Q-Former also reads token ids (the instruction, in the LLM's tokenizer;
  the word-embedding table is sized to the LLM vocabulary, as the MIR repo did by resizing
  BERT's), bidirectional attention over [queries; text]; the output is the query positions.
  Without ids it falls back to queries only. The last layer's text feed-forward cannot reach
  the output (only query positions are returned), so it never receives a gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from modalign.errors import ConfigError
from modalign.methods.connectors.base import CONNECTORS, Connector, positive


@dataclasses.dataclass(frozen=True)
class QFormerOptions:
    """Real-size defaults = BERT-base with 32 queries and cross-attention every 2nd layer."""

    num_queries: int = 32
    num_layers: int = 12
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    text_input: Literal["none", "instruction"] = "none"
    max_text_tokens: int = 512  # longer instructions are cut to their first max_text_tokens
    dropout: float = 0.1  # BERT's hidden and attention dropout (active in train mode only)
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        where = "connector qformer"
        positive(where, num_queries=self.num_queries, num_layers=self.num_layers,
                 hidden_size=self.hidden_size, num_heads=self.num_heads,
                 intermediate_size=self.intermediate_size,
                 cross_attention_frequency=self.cross_attention_frequency,
                 max_text_tokens=self.max_text_tokens,
                 initializer_range=self.initializer_range)  # fmt: skip
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{where}: hidden_size={self.hidden_size} is not a multiple of "
                f"num_heads={self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}: dropout must be in [0, 1), got {self.dropout}")


@CONNECTORS.register("qformer")
class QFormerConnector(nn.Module, Connector):
    """(B, N, Dv) [+ text ids (B, T)] -> (B, num_queries, D)."""

    Options = QFormerOptions

    def __init__(
        self, vision_dim: int, text_dim: int, options: QFormerOptions, vocab_size: int | None
    ) -> None:
        from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

        super().__init__()
        self.accepts_text = options.text_input == "instruction"
        if self.accepts_text and not vocab_size:
            raise ConfigError(
                "connector qformer with text_input=instruction needs the LLM's vocab_size"
            )
        config = InstructBlipQFormerConfig(
            vocab_size=vocab_size if self.accepts_text else 1,
            hidden_size=options.hidden_size,
            num_hidden_layers=options.num_layers,
            num_attention_heads=options.num_heads,
            intermediate_size=options.intermediate_size,
            hidden_dropout_prob=options.dropout,
            attention_probs_dropout_prob=options.dropout,
            max_position_embeddings=options.max_text_tokens if self.accepts_text else 1,
            initializer_range=options.initializer_range,
            pad_token_id=None,  # LLM ids: padding is handled by the attention mask
            cross_attention_frequency=options.cross_attention_frequency,
            encoder_hidden_size=vision_dim,
        )
        self.qformer = InstructBlipQFormerModel(config)
        if not self.accepts_text:  # queries only: drop the text branch (TinyLLaVA does the same)
            self.qformer.embeddings.word_embeddings = None
            self.qformer.embeddings.position_embeddings = None
            for layer in self.qformer.encoder.layer:
                layer.intermediate = None
                layer.output = None
        self.query_tokens = nn.Parameter(torch.empty(1, options.num_queries, options.hidden_size))
        self.proj = nn.Linear(options.hidden_size, text_dim)
        self._remember("qformer", options)
        self.reset_parameters()

    @classmethod
    def from_options(cls, name: str, options: Any, *, vision_dim: int, text_dim: int,
                     num_vision_tokens: int, vocab_size: int | None) -> QFormerConnector:  # fmt: skip
        return cls(vision_dim, text_dim, options, vocab_size)

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        return options.num_queries

    def forward(
        self,
        features: torch.Tensor,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """features (B, N, Dv); text_ids / text_mask (B, T), only with text_input=instruction."""
        if text_ids is not None and not self.accepts_text:
            raise TypeError("this Q-Former was built with text_input=none; it takes no text")
        b, n_queries = features.shape[0], self.options.num_queries
        queries = self.query_tokens.expand(b, -1, -1)  # (B, Q, Hq)
        attention_mask = position_ids = None
        if text_ids is not None:
            if text_ids.shape[0] != b:
                raise ValueError(
                    f"Q-Former text has {text_ids.shape[0]} rows for {b} images (one row per image)"
                )
            if text_mask is None:
                text_mask = torch.ones_like(text_ids)
            limit = self.options.max_text_tokens
            text_ids, text_mask = text_ids[:, :limit], text_mask[:, :limit]  # (B, T)
            # Positions count real tokens only, so left and right padding give the same result.
            position_ids = (text_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
            query_mask = torch.ones(b, n_queries, dtype=text_mask.dtype, device=text_mask.device)
            attention_mask = torch.cat([query_mask, text_mask], dim=1)  # (B, Q+T)
        out = self.qformer(
            input_ids=text_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            query_embeds=queries,
            encoder_hidden_states=features,
            return_dict=True,
        )
        return self.proj(out.last_hidden_state[:, :n_queries])  # (B, Q, D)

    def reset_parameters(self) -> None:
        """BERT init inside the Q-Former (N(0, 0.02), zero bias, unit LayerNorm), queries
        N(0, 0.02) (BLIP-2), torch's default init for the output Linear (the MIR repo's mm_mlp)."""
        std = self.options.initializer_range
        for module in self.qformer.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.query_tokens, mean=0.0, std=std)
        self.proj.reset_parameters()
