"""Vision-language connectors: vision features (B, N, Dv) -> LLM input embeddings (B, M, D).

    spec = ConnectorSpec.parse("qformer:num_queries=32,text_input=instruction")
    connector = build_connector(spec, vision_dim=1024, text_dim=4096, num_vision_tokens=576,
                                vocab_size=32000, seed=0)
    connector.num_output_tokens(576)   # 32

Names: linear, mlp<N>x_gelu (mlp2x_gelu, mlp4x_gelu, ...), qformer, resampler, pool,
and VLSA's sa_perceiver and tiled (`modalign.methods.vlsa`; high-resolution tiles: their
`view_grid` tells the model to feed 1 + R*C views per image). Every connector registers in
`CONNECTORS`; importing `modalign.methods` registers them all.
Every connector is a plain nn.Module with `num_output_tokens(n)` and `reset_parameters()`;
`accepts_text` says whether forward also takes `text_ids` / `text_mask`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from modalign.methods.connectors.base import CONNECTORS, Connector
from modalign.methods.connectors.linear import LinearConnector
from modalign.methods.connectors.mlp import MLPConnector
from modalign.methods.connectors.pool import PoolConnector
from modalign.methods.connectors.qformer import QFormerConnector
from modalign.methods.connectors.resampler import ResamplerConnector
from modalign.methods.connectors.spec import ConnectorSpec, connector_class

__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorSpec",
    "LinearConnector",
    "MLPConnector",
    "PoolConnector",
    "QFormerConnector",
    "ResamplerConnector",
    "build_connector",
    "connector_class",
    "connector_names",
    "reset_connector",
]


def _forked_rng() -> Any:
    """Fork the CPU RNG and, once CUDA is initialised, every CUDA device's (restored on exit)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    return torch.random.fork_rng(devices=devices)


def connector_names() -> list[str]:
    """Registered names for help texts (any mlp<N>x_gelu is accepted besides these)."""
    return CONNECTORS.names()


def build_connector(
    spec: ConnectorSpec | str | Mapping[str, Any],
    vision_dim: int,
    text_dim: int,
    num_vision_tokens: int,
    *,
    vocab_size: int | None = None,
    seed: int | None = None,
) -> nn.Module:
    """A new connector for vision width `vision_dim`, LLM width `text_dim` and N vision tokens.

    `vocab_size` (the LLM's) is needed by text-reading connectors (qformer, text_input=instruction).
    With `seed`, the weights depend on the seed only (as `reset_connector(module, seed)` would
    set them) and the global RNG state is left untouched; without, torch's global RNG is used.
    Built in float32 on the current default device; move it with `.to(device, dtype)`.
    """
    spec = ConnectorSpec.coerce(spec)
    cls = spec.connector_class
    options = spec.parsed_options()

    def make() -> nn.Module:
        return cls.from_options(spec.name, options, vision_dim=vision_dim, text_dim=text_dim,
                                num_vision_tokens=num_vision_tokens, vocab_size=vocab_size)  # fmt: skip

    if seed is None:
        return make()
    with _forked_rng():  # construction draws do not touch the caller's RNG
        module = make()
    reset_connector(module, seed)  # so build(seed=s) equals reset_connector(module, s)
    return module


def reset_connector(connector: nn.Module, seed: int) -> None:
    """Re-initialise `connector` in place from `seed` (the global RNG state is left untouched).

    A registered connector resets itself (`reset_parameters`); another family's projector (HF
    LLaVA's two-layer MLP ...) gets nn.Linear's default ranges (kaiming-uniform, a = sqrt(5):
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight, then bias) drawn from `seed`, layer by layer in
    module order, and its other modules their own `reset_parameters`.
    """
    if hasattr(connector, "reset_parameters"):
        with _forked_rng():
            torch.manual_seed(seed)
            connector.reset_parameters()
        return
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in connector.modules():
            if isinstance(module, nn.Linear):
                bound = 1 / module.in_features**0.5
                for param in (module.weight, module.bias):
                    if param is not None:
                        fresh = torch.empty(param.shape, dtype=torch.float32).uniform_(
                            -bound, bound, generator=gen
                        )
                        param.copy_(fresh.to(param.device, param.dtype))
            elif module is not connector and hasattr(module, "reset_parameters"):
                module.reset_parameters()
