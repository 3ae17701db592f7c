"""Training objectives: small nn.Modules that turn one forward pass into named loss terms.

The total loss is `L_lm + sum_i weight_i * sum(terms_i)`; every term is logged on its own.
An objective sees what the forward pass produced (`ForwardContext`): the inputs, the model's
outputs, the connector's output tokens, the vision-token mask, the hidden states if it asked for
them, and the model itself (for extra passes). It may own parameters (a learnable temperature),
which then train, checkpoint and resume with the model. The same objects work in the
transformers Trainer (`modalign.train.AlignmentTrainer`) and in a plain PyTorch loop
(`modalign.methods.objectives.compute_loss`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from modalign.errors import ConfigError, DataError
from modalign.registry import Registry
from modalign.settings import coerce, parse_spec, spec_from

OBJECTIVES: Registry[type[Objective]] = Registry("objective")


@dataclass
class ForwardContext:
    """What one training forward pass produced, for objectives to read."""

    model: nn.Module  # the unwrapped model (objectives may run extra passes through it)
    inputs: Mapping[str, Any]  # the batch as given to the model (input_ids, labels, pixels ...)
    outputs: Any  # the model's output (logits, loss, hidden_states when requested)
    connector_output: torch.Tensor | None  # (B, M, D) image tokens the connector produced
    vision_mask: torch.Tensor | None  # (B, T) bool: image-token positions in the sequence
    extras: Mapping[str, Any]  # batch entries the model does not take (e.g. SEA labels)

    @property
    def hidden_states(self) -> tuple[torch.Tensor, ...]:
        """Decoder hidden states (embeddings first), (B, T, D) each; needs `needs_hidden_states`."""
        hidden = getattr(self.outputs, "hidden_states", None)
        if hidden is None:
            raise RuntimeError("hidden states were not requested (set needs_hidden_states = True)")
        return hidden

    def require_vision(self, who: str) -> torch.Tensor:
        """The vision mask, or a clear error when the batch has no image tokens."""
        if self.vision_mask is None or not bool(self.vision_mask.any()):
            raise DataError(f"objective {who!r} needs image tokens, but the batch has none")
        return self.vision_mask


class Objective(nn.Module):
    """Base class: subclass, set `name`, implement `forward(ctx) -> {term: scalar tensor}`.

    `weight` multiplies the sum of the terms in the total loss. `needs_hidden_states` asks the
    forward pass for every layer's hidden states; `needs_connector_output` hooks the connector;
    `batch_keys` names batch entries the objective reads from `ctx.extras` (collators provide
    `image_paths` and `captions`). `setup(model, processor)` runs once before training;
    `after_optimizer_step()` after each optimizer step (e.g. to clamp a temperature).
    """

    name: ClassVar[str] = "objective"
    needs_hidden_states: ClassVar[bool] = False
    needs_connector_output: ClassVar[bool] = False
    batch_keys: ClassVar[tuple[str, ...]] = ()  # batch entries it reads (kept out of the model)

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if not weight >= 0:
            raise ConfigError(f"objective {self.name!r}: weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def forward(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def setup(self, model: Any, processor: Any) -> None:
        """Called once before training with the model and its processor (e.g. to tokenize)."""

    def after_optimizer_step(self) -> None:
        """Hook after every optimizer step; nothing by default."""

    def extra_logs(self) -> dict[str, float]:
        """Values to log besides the loss terms (e.g. the current temperature)."""
        return {}


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective by name, with its weight (None: its default) and options; parsed from the
    CLI form `NAME[:WEIGHT][,KEY=VALUE...]`, e.g. `sea:0.5,labels=cache/,window=2`."""

    name: str
    weight: float | None = None
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        cls = OBJECTIVES[self.name]  # an unknown name fails here, listing the choices
        accepted = _options_of(cls)
        unknown = sorted({k for k, _ in self.options} - set(accepted))
        if unknown:
            raise ConfigError(
                f"objective {self.name!r} has no option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted)) or 'none'}"
            )
        if self.weight is not None and not self.weight >= 0:
            raise ConfigError(f"objective {self.name!r}: weight must be >= 0, got {self.weight}")

    @classmethod
    def parse(cls, text: str) -> ObjectiveSpec:
        """From the CLI form `NAME[:WEIGHT][,KEY=VALUE...]` (`modalign.settings.parse_spec`);
        option values take the types of the objective's keyword arguments."""
        parts = parse_spec(text, "objective")
        weight = None
        if parts.arg is not None:
            try:
                weight = coerce(parts.arg, float, "weight")
            except ConfigError:
                raise ConfigError(f"objective {text!r}: weight must be a number") from None
        accepted = _options_of(OBJECTIVES[parts.name])
        options = tuple(
            (key, coerce(raw, accepted.get(key, str), f"objective {parts.name!r} option {key!r}"))
            for key, raw in parts.options
        )
        return cls(parts.name, weight, options)

    @classmethod
    def coerce(cls, value: ObjectiveSpec | str | Mapping[str, Any]) -> ObjectiveSpec:
        """A spec from a spec, a CLI string or its recorded form {"name", "weight", "options"}."""
        return spec_from(cls, value, "objective")

    def build(self) -> Objective:
        """The objective module (weight and options applied)."""
        kwargs = dict(self.options)
        if self.weight is not None:
            kwargs["weight"] = self.weight
        return OBJECTIVES[self.name](**kwargs)


def _options_of(cls: type) -> dict[str, Any]:
    """Keyword options of an objective's __init__ (besides weight), with their types (from the
    annotations; the default's type where a parameter has none)."""
    params = inspect.signature(cls.__init__).parameters
    hints = typing.get_type_hints(cls.__init__)
    return {
        n: hints.get(n, type(p.default) if p.default is not p.empty else str)
        for n, p in params.items()
        if n not in ("self", "weight") and p.kind is not p.VAR_KEYWORD
    }
