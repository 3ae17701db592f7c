"""LLaVA's projector weights: the original run's `mm_projector` keys (`0.weight`, `2.weight`, or
`weight` for a linear connector) and transformers' `linear_1` / `linear_2`, both ways.

    weights = parse_projector(state, None)          # ProjectorWeights: linear_1/linear_2 names
    projector.load_state_dict(projector_state(weights, text_dim))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from modalign.errors import ConfigError, ModelError

__all__ = [
    "PROJECTOR_TYPES",
    "ProjectorWeights",
    "check_projector_shapes",
    "expected_projector_shapes",
    "parse_projector",
    "projector_state",
    "strip_prefix",
]

PROJECTOR_TYPES = ("mlp2x_gelu", "linear")


@dataclass(frozen=True)
class ProjectorWeights:
    """Connector weights normalised to `multi_modal_projector` names, plus what they imply."""

    state: dict[str, torch.Tensor]  # keys: linear_1.weight/bias, linear_2.weight/bias
    projector_type: str  # mlp2x_gelu | linear
    bias: bool


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop everything up to `mm_projector.` (e.g. `model.`, `base_model.model.model.`)."""
    if not any("mm_projector." in k for k in state):
        return dict(state)
    return {k.split("mm_projector.", 1)[1]: v for k, v in state.items() if "mm_projector." in k}


def parse_projector(state: dict[str, torch.Tensor], projector_type: str | None) -> ProjectorWeights:
    """Map LLaVA connector keys to `linear_1`/`linear_2`, checking type and completeness."""
    weights = strip_prefix(state)
    keys = sorted(weights)
    indices = sorted({int(m.group(1)) for k in keys if (m := re.fullmatch(r"(\d+)\.weight", k))})
    inferred = "linear" if "weight" in weights else "mlp2x_gelu" if indices == [0, 2] else None
    if indices and indices != [0, 2]:
        depth = len(indices)
        raise ModelError(
            f"projector has {depth} linear layers (keys: {', '.join(keys)}); HF LLaVA supports "
            "mlp2x_gelu (2 layers) and linear connectors only"
        )
    if projector_type is not None and projector_type not in PROJECTOR_TYPES:
        raise ConfigError(
            f"projector_type must be one of {PROJECTOR_TYPES}, got {projector_type!r}"
        )
    kind = projector_type or inferred
    if kind is None or (projector_type and inferred and projector_type != inferred):
        raise ModelError(
            f"projector keys ({', '.join(keys) or 'none'}) do not match "
            f"{projector_type or 'a known connector'} (mlp2x_gelu expects 0.weight, 0.bias, "
            "2.weight, 2.bias; linear expects weight, bias)"
        )
    names = {"0": "linear_1", "2": "linear_2"} if kind == "mlp2x_gelu" else {"": "linear_1"}
    bias = any(k.endswith("bias") for k in keys)
    mapped: dict[str, torch.Tensor] = {}
    for src, dst in names.items():
        for part in ("weight", "bias") if bias else ("weight",):
            key = f"{src}.{part}" if src else part
            if key not in weights:
                raise ModelError(
                    f"projector weights are missing key {key!r} (have: {', '.join(keys)})"
                )
            mapped[f"{dst}.{part}"] = weights[key]
    unused = set(keys) - {f"{s}.{p}" if s else p for s in names for p in ("weight", "bias")}
    if unused:
        raise ModelError(f"unexpected projector keys for {kind}: {', '.join(sorted(unused))}")
    return ProjectorWeights(mapped, kind, bias)


def expected_projector_shapes(
    weights: ProjectorWeights, vision_dim: int, text_dim: int
) -> dict[str, tuple[int, ...]]:
    """Shapes the LLaVA checkpoint must have for a vision width and an LLM width."""
    shapes: dict[str, tuple[int, ...]] = {"linear_1.weight": (text_dim, vision_dim)}
    if weights.projector_type == "mlp2x_gelu":
        shapes["linear_2.weight"] = (text_dim, text_dim)
    if weights.bias:
        shapes.update({k.replace("weight", "bias"): (text_dim,) for k in list(shapes)})
    return shapes


def check_projector_shapes(weights: ProjectorWeights, vision_dim: int, text_dim: int) -> None:
    """Raise a ValueError naming every tensor whose shape does not fit the two towers."""
    expected = expected_projector_shapes(weights, vision_dim, text_dim)
    wrong = [
        f"{k}: got {tuple(weights.state[k].shape)}, expected {shape}"
        for k, shape in expected.items()
        if tuple(weights.state[k].shape) != shape
    ]
    if wrong:
        raise ModelError(
            f"projector shape mismatch (vision hidden {vision_dim}, LLM hidden {text_dim}): "
            + "; ".join(wrong)
        )


def projector_state(weights: ProjectorWeights, text_dim: int) -> dict[str, torch.Tensor]:
    """State dict for HF's two-layer projector; a linear connector gets identity as linear_2."""
    state = dict(weights.state)
    if weights.projector_type == "linear":
        # linear_2(act(linear_1 x)) with act = identity and linear_2 = I reproduces W x + b exactly.
        state["linear_2.weight"] = torch.eye(text_dim, dtype=state["linear_1.weight"].dtype)
        if weights.bias:
            state["linear_2.bias"] = torch.zeros(text_dim, dtype=state["linear_1.weight"].dtype)
    return state
