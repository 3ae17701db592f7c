"""A kept LoRA without peft, for exported checkpoints: the computation of peft's `lora.Linear`
for one adapter, under the same parameter names (`base_layer`, `lora_A.default`,
`lora_B.default`), so the tensors of a checkpoint saved with unmerged LoRA (`modalign.methods.lora`)
load into it and its outputs equal peft's bit for bit.

modalign trains with peft; this layer runs a trained checkpoint where neither peft nor modalign
is installed (the generated code of `modalign.models.export`).

    attach_plain_lora(model, model.config.modalign_extensions["lora"])   # then load the weights
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from modalign.methods.lora import ADAPTER, lora_settings

__all__ = ["PlainLoraLinear", "attach_plain_lora"]


class PlainLoraLinear(nn.Module):
    """base(x) + (alpha / r) * B(A(dropout(x))), the input cast to the adapter's dtype and the sum
    cast back to the base output's dtype, in peft's order of operations."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.ModuleDict({ADAPTER: nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({ADAPTER: nn.Linear(r, base.out_features, bias=False)})
        drop = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.lora_dropout = nn.ModuleDict({ADAPTER: drop})
        self.scaling = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)  # (..., out)
        out_dtype = result.dtype
        lora_a, lora_b = self.lora_A[ADAPTER], self.lora_B[ADAPTER]
        if x.dtype != lora_a.weight.dtype:
            x = x.to(dtype=lora_a.weight.dtype)
        result = result + lora_b(lora_a(self.lora_dropout[ADAPTER](x))) * self.scaling
        return result.to(out_dtype)


def attach_plain_lora(model: nn.Module, state: Mapping[str, Any]) -> list[str]:
    """Wrap the linears named in `state` (`lora_state` output) with PlainLoraLinear; the adapter
    weights are placeholders until the checkpoint's tensors are loaded. Returns the names."""
    names, r, alpha, dropout = lora_settings(model, state)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, PlainLoraLinear(getattr(owner, child), r, alpha, dropout))
    return names
