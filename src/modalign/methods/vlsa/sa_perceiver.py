"""`sa_perceiver`: VLSA's SA-Perceiver, high-resolution detail compressed into the low-res grid.

Input: per image 1 + R*C views through the vision tower (the low-resolution view, then the
R x C tiles row by row; `methods.vlsa.tiling.split_views`), i.e. (I * (1 + R*C), N, Dv) with N = g*g.
The N low-resolution tokens plus one learnable global query cross-attend to the high-resolution
tokens (eq. 1), then self-attend (eq. 2); the N + 1 results go through a token-wise projector
(`mlp2x_gelu` by default) to the LLM width: l = N image tokens + 1 global token, so the LLM sees
as many image tokens as at low resolution (plus one).

Defaults (docs/methods.md, SA-Perceiver): softmax attention with 1/sqrt(d_h), separate K/V, in
the vision width Dv; `scope=local`: low-res token (i, j) sees only the R x C high-res tokens of
its own cell in the stitched (R g) x (C g) grid, the global query sees all of them. Options give
the printed form (`attention=silu_literal`: SiLU(Q K^T) V divided by the number of keys, and in
the self-attention Q = V = the tokens, only K projected; `kv=shared`: one w_kv for K and V) and
`scope=global`. Our choices: pre-LayerNorm on each branch's inputs (`norm=none` drops it) and
zero-initialised output projections, so a fresh perceiver passes the low-res tokens through
unchanged and training starts from the low-resolution model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from modalign.errors import ConfigError
from modalign.methods.connectors.base import CONNECTORS, Connector, per_image_views, positive
from modalign.methods.connectors.spec import token_wise_projector
from modalign.methods.vlsa.tiling import check_tile_count

__all__ = ["SAPerceiverConnector", "SAPerceiverOptions", "cell_tokens", "stitch_tiles"]


@dataclasses.dataclass(frozen=True)
class SAPerceiverOptions:
    """Grid of high-res tiles, attention form, and the projector to the LLM width."""

    grid_rows: int = 2
    grid_cols: int = 2
    num_heads: int = 8
    attention: Literal["softmax", "silu_literal"] = "softmax"
    kv: Literal["separate", "shared"] = "separate"
    scope: Literal["local", "global"] = "local"
    norm: Literal["layernorm", "none"] = "layernorm"
    projector: str = "mlp2x_gelu"

    def __post_init__(self) -> None:
        positive("connector sa_perceiver", num_heads=self.num_heads)
        check_tile_count(self.grid_rows, self.grid_cols, "connector sa_perceiver")


def stitch_tiles(tiles: torch.Tensor, rows: int, cols: int, side: int) -> torch.Tensor:
    """(I, R*C, g*g, D) tile tokens (tiles row-major) -> (I, R*g, C*g, D), the stitched grid."""
    i, _, _, d = tiles.shape
    grid = tiles.reshape(i, rows, cols, side, side, d)  # (I, R, C, g, g, D)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(i, rows * side, cols * side, d)


def cell_tokens(stitched: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(I, R*g, C*g, D) -> (I, g*g, R*C, D): for low-res cell (i, j), the stitched rows
    R*i .. R*i+R-1 and columns C*j .. C*j+C-1 (the high-res tokens inside that cell)."""
    i, height, width, d = stitched.shape
    g_r, g_c = height // rows, width // cols
    cells = stitched.reshape(i, g_r, rows, g_c, cols, d)  # (I, g, R, g, C, D)
    return cells.permute(0, 1, 3, 2, 4, 5).reshape(i, g_r * g_c, rows * cols, d)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str) -> torch.Tensor:
    """q (..., h, Tq, dh), k / v (..., h, Tk, dh) -> (..., h, Tq, dh)."""
    if kind == "softmax":
        return F.scaled_dot_product_attention(q, k, v)
    weights = F.silu(q @ k.transpose(-1, -2)) / k.shape[-2]  # printed sigma = SiLU, no 1/sqrt(d)
    return weights @ v


class _Heads:
    """Split (..., T, h*dh) into heads (..., h, T, dh) and merge back."""

    def __init__(self, heads: int) -> None:
        self.heads = heads

    def split(self, x: torch.Tensor) -> torch.Tensor:
        *lead, t, width = x.shape
        return x.reshape(*lead, t, self.heads, width // self.heads).transpose(-2, -3)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        *lead, h, t, dh = x.shape
        return x.transpose(-2, -3).reshape(*lead, t, h * dh)


@CONNECTORS.register("sa_perceiver")
class SAPerceiverConnector(nn.Module, Connector):
    """(I * (1 + R*C), N, Dv) views -> (I, N + 1, D): N image tokens, then the global token."""

    Options = SAPerceiverOptions
    global_token = True  # the query's output P comes last

    def __init__(
        self, vision_dim: int, text_dim: int, num_tokens: int, options: SAPerceiverOptions
    ) -> None:
        super().__init__()
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ConfigError(
                f"connector sa_perceiver needs a square patch grid, got {num_tokens} vision "
                "tokens (use vision_feature_select_strategy='default' to drop a CLS token)"
            )
        if vision_dim % options.num_heads:
            raise ConfigError(
                f"connector sa_perceiver: num_heads={options.num_heads} does not divide the "
                f"vision width {vision_dim}"
            )
        self.side, self.num_tokens = side, num_tokens
        self.view_grid = (options.grid_rows, options.grid_cols)  # read by the model's tiling
        literal = options.attention == "silu_literal"
        norm = nn.LayerNorm if options.norm == "layernorm" else (lambda _: nn.Identity())
        self.heads = _Heads(options.num_heads)
        self.query = nn.Parameter(torch.empty(1, vision_dim))  # the global query q
        self.norm_lo, self.norm_hi = norm(vision_dim), norm(vision_dim)
        self.cross_q = nn.Linear(vision_dim, vision_dim)
        self.cross_k = nn.Linear(vision_dim, vision_dim)
        # kv=shared: one w_kv for keys and values (no alias module: checkpoints keep one tensor)
        self.cross_v = None if options.kv == "shared" else nn.Linear(vision_dim, vision_dim)
        self.cross_out = nn.Linear(vision_dim, vision_dim)
        self.norm_self = norm(vision_dim)
        self.self_q = nn.Identity() if literal else nn.Linear(vision_dim, vision_dim)
        self.self_k = nn.Linear(vision_dim, vision_dim)
        self.self_v = nn.Identity() if literal else nn.Linear(vision_dim, vision_dim)
        self.self_out = nn.Linear(vision_dim, vision_dim)
        self.projector = token_wise_projector(
            options.projector, vision_dim, text_dim, num_tokens + 1, "connector sa_perceiver"
        )
        self._remember("sa_perceiver", options)
        self.reset_parameters()

    @classmethod
    def from_options(cls, name: str, options: Any, *, vision_dim: int, text_dim: int,
                     num_vision_tokens: int, vocab_size: int | None) -> SAPerceiverConnector:  # fmt: skip
        return cls(vision_dim, text_dim, num_vision_tokens, options)

    @classmethod
    def output_tokens(cls, name: str, options: Any, num_input_tokens: int) -> int:
        return num_input_tokens + 1

    def _cross(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """low (I, N+1, Dv) queries [tokens; q], high (I, R*C, N, Dv) -> (I, N+1, Dv) update."""
        rows, cols = self.view_grid
        kind = self.options.attention
        q = self.heads.split(self.cross_q(self.norm_lo(low)))  # (I, h, N+1, dh)
        stitched = stitch_tiles(self.norm_hi(high), rows, cols, self.side)  # (I, Rg, Cg, Dv)
        k_all = self.cross_k(stitched)  # (I, Rg, Cg, Dv)
        v_all = k_all if self.cross_v is None else self.cross_v(stitched)  # (I, Rg, Cg, Dv)
        flat_k = self.heads.split(k_all.flatten(1, 2))  # (I, h, M, dh)
        flat_v = self.heads.split(v_all.flatten(1, 2))  # (I, h, M, dh)
        if self.options.scope == "global":
            return self.heads.merge(_attend(q, flat_k, flat_v, kind))  # (I, N+1, Dv)
        cell_k = self.heads.split(cell_tokens(k_all, rows, cols))  # (I, N, h, R*C, dh)
        cell_v = self.heads.split(cell_tokens(v_all, rows, cols))  # (I, N, h, R*C, dh)
        q_tok = q[:, :, : self.num_tokens].transpose(1, 2).unsqueeze(-2)  # (I, N, h, 1, dh)
        local = _attend(q_tok, cell_k, cell_v, kind).squeeze(-2)  # (I, N, h, dh)
        local = local.flatten(-2)  # (I, N, Dv)
        glob = self.heads.merge(_attend(q[:, :, self.num_tokens :], flat_k, flat_v, kind))
        return torch.cat([local, glob], dim=1)  # (I, N+1, Dv)

    def _self(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm_self(x)  # (I, N+1, Dv)
        q, k, v = (self.heads.split(f(y)) for f in (self.self_q, self.self_k, self.self_v))
        return self.heads.merge(_attend(q, k, v, self.options.attention))  # (I, N+1, Dv)

    def perceive(self, features: torch.Tensor) -> torch.Tensor:
        """(I * (1 + R*C), N, Dv) -> (I, N + 1, Dv), in the vision width (before the projector)."""
        x = per_image_views(features, self.view_grid, self.num_tokens, "sa_perceiver")
        width = x.shape[-1]  # x: (I, 1 + R*C, N, Dv)
        low, high = x[:, 0], x[:, 1:]  # (I, N, Dv), (I, R*C, N, Dv)
        query = self.query.to(low.dtype).expand(low.shape[0], 1, width)  # (I, 1, Dv)
        lo = torch.cat([low, query], dim=1)  # (I, N+1, Dv)
        lo = self.cross_out(self._cross(lo, high)) + lo  # eq. 1
        return self.self_out(self._self(lo)) + lo  # eq. 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(self.perceive(features))  # (I, N+1, D)

    def reset_parameters(self) -> None:
        """Global query ~ N(0, 0.02); torch defaults elsewhere; output projections zero."""
        nn.init.normal_(self.query, std=0.02)
        for module in self.modules():
            if module is not self and isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()
        for out in (self.cross_out, self.self_out):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
