"""`resampler`: a Perceiver resampler (Flamingo; TinyLLaVA's `resampler` connector).

Learnable latents cross-attend to [vision tokens; latents] (LayerNorm on both, keys/values from
the concatenation, bias-free projections), then a x4 GELU feed-forward, each with a residual;
`num_layers` such blocks, a final LayerNorm and Linear(H, D). Tokens are first mapped to the
working width H by Linear(Dv, H) (TinyLLaVA's `linear`; identity when H = Dv, the default).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modalign.methods.connectors.base import CONNECTORS, Connector, positive


@dataclasses.dataclass(frozen=True)
class ResamplerOptions:
    """Defaults follow TinyLLaVA (128 latents, 3 layers, 8 heads x 64, FFN x4)."""

    num_queries: int = 128
    num_layers: int = 3
    num_heads: int = 8
    head_dim: int = 64
    ffn_mult: int = 4
    hidden_size: int | None = None  # working width H; None = the vision width Dv

    def __post_init__(self) -> None:
        positive("connector resampler", num_queries=self.num_queries, num_layers=self.num_layers,
                 num_heads=self.num_heads, head_dim=self.head_dim, ffn_mult=self.ffn_mult,
                 hidden_size=self.hidden_size)  # fmt: skip


class PerceiverAttention(nn.Module):
    """Latents (queries) attend to [media; latents] (keys and values)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        media = self.norm_media(media)  # (B, N, H)
        latents = self.norm_latents(latents)  # (B, Q, H)
        b, q_len, _ = latents.shape
        q = self.to_q(latents)  # (B, Q, h*d)
        k, v = self.to_kv(torch.cat([media, latents], dim=1)).chunk(2, dim=-1)  # (B, N+Q, h*d)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, x.shape[1], self.heads, -1).transpose(1, 2)  # (B, h, T, d)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # (B, h, Q, d)
        out = out.transpose(1, 2).reshape(b, q_len, -1)  # (B, Q, h*d)
        return self.to_out(out)


class FeedForward(nn.Sequential):
    """LayerNorm, Linear(H, mult*H), GELU, Linear(mult*H, H), bias-free as in TinyLLaVA."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, mult * dim, bias=False),
            nn.GELU(),
            nn.Linear(mult * dim, dim, bias=False),
        )


class ResamplerBlock(nn.Module):
    """One Perceiver layer: cross-attention then feed-forward, each with a residual."""

    def __init__(self, dim: int, options: ResamplerOptions) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim, options.num_heads, options.head_dim)
        self.ff = FeedForward(dim, options.ffn_mult)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = self.attn(media, latents) + latents
        return self.ff(latents) + latents


@CONNECTORS.register("resampler")
class ResamplerConnector(nn.Module, Connector):
    """(B, N, Dv) -> (B, num_queries, D)."""

    Options = ResamplerOptions

    def __init__(self, vision_dim: int, text_dim: int, options: ResamplerOptions) -> None:
        super().__init__()
        width = options.hidden_size or vision_dim
        self.proj_in = nn.Linear(vision_dim, width) if width != vision_dim else nn.Identity()
        self.latents = nn.Parameter(torch.empty(options.num_queries, width))
        self.layers = nn.ModuleList(
            ResamplerBlock(width, options) for _ in range(options.num_layers)
        )
        self.norm = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, text_dim)
        self._remember("resampler", options)
        self.reset_parameters()

    @classmethod
    def from_options(cls, name: str, options: Any, *, vision_dim: int, text_dim: int,
                     num_vision_tokens: int, vocab_size: int | None) -> ResamplerConnector:  # fmt: skip
        return cls(vision_dim, text_dim, options)

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        return options.num_queries

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        media = self.proj_in(features)  # (B, N, H)
        latents = self.latents.unsqueeze(0).expand(media.shape[0], -1, -1)  # (B, Q, H)
        for block in self.layers:
            latents = block(media, latents)
        return self.proj_out(self.norm(latents))  # (B, Q, D)

    def reset_parameters(self) -> None:
        """Latents ~ N(0, 1) (TinyLLaVA / Flamingo), torch defaults for Linear and LayerNorm."""
        nn.init.normal_(self.latents, mean=0.0, std=1.0)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()
