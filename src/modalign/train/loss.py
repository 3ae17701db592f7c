"""One training step's loss: L_lm + sum_i weight_i * L_i, with every term returned by name.

    result = compute_loss(model, batch, objectives)     # a plain PyTorch loop
    result.loss.backward(); result.terms                 # {"lm": ..., "mfid": ...} (detached)

`AlignmentTrainer` calls the same function, so the Trainer and a hand-written loop train alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modalign.errors import DataError
from modalign.methods.objectives import ForwardContext, Objective


@dataclass
class LossResult:
    """The loss to back-propagate, its named (unweighted, detached) terms, the model outputs."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    outputs: Any


def image_token_id(model: nn.Module) -> int | None:
    """The image placeholder id of an LVLM config (image_token_id or image_token_index)."""
    config = model.config
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if value is not None:
            return int(value)
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside distributed / compiled wrappers (DDP's `.module`), which has a config."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return model


def _connector(model: nn.Module) -> nn.Module:
    from modalign.models.parts import model_parts

    return model_parts(model).connector


def compute_loss(
    model: nn.Module,
    batch: Mapping[str, Any],
    objectives: Sequence[Objective] = (),
    *,
    model_kwargs: Mapping[str, Any] | None = None,
) -> LossResult:
    """Forward `batch` through `model`, then add each objective's weighted terms to the LM loss.

    Batch entries named in an objective's `batch_keys` are kept out of the model call and given
    to the objectives as `ctx.extras`. `model_kwargs` are extra forward arguments (e.g. the
    Trainer's `num_items_in_batch`). `model` may be wrapped (DDP); objectives see the inner model.
    """
    inner = unwrap(model)
    extra_keys = {key for o in objectives for key in getattr(o, "batch_keys", ())}
    inputs = {k: v for k, v in batch.items() if k not in extra_keys}
    extras = {k: batch[k] for k in extra_keys if k in batch}
    if "labels" not in inputs:
        raise DataError("the batch has no 'labels': nothing for the language-model loss")
    captured: dict[str, torch.Tensor] = {}
    hook = None
    if any(o.needs_connector_output for o in objectives):
        hook = _connector(inner).register_forward_hook(
            lambda _m, _args, out: captured.__setitem__("out", out)
        )
    want_hidden = any(o.needs_hidden_states for o in objectives)
    try:
        outputs = model(
            **inputs, **(model_kwargs or {}), output_hidden_states=want_hidden, return_dict=True
        )
    finally:
        if hook is not None:
            hook.remove()
    if outputs.loss is None:
        raise DataError("the model returned no loss (are all labels -100?)")
    lm = outputs.loss
    vision_mask = None
    token_id = image_token_id(inner)
    if token_id is not None and "input_ids" in inputs:
        vision_mask = inputs["input_ids"] == token_id  # (B, T)
    ctx = ForwardContext(inner, inputs, outputs, captured.get("out"), vision_mask, extras)
    total, terms = lm, {"lm": lm.detach()}
    for objective in objectives:
        named = objective(ctx)
        if not named:
            raise RuntimeError(f"objective {objective.name!r} returned no loss terms")
        part = torch.stack([v.reshape(()) for v in named.values()]).sum()
        total = total + objective.weight * part
        for key, value in named.items():
            label = key if key == objective.name else f"{objective.name}/{key}"
            terms[label] = value.detach()
    return LossResult(total, terms, outputs)
