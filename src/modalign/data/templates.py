"""The one table of sequence templates: how an image and its text are laid out in a sequence,
and which jobs each layout serves (measuring MIR through an adapter, training through a collator).

    TEMPLATES["plain"].trains      # True: pre-training batches (`models.collate.PlainCollator`)
    measuring_templates()          # ("chat", "plain", "official"): `modalign mir --template`
"""

from __future__ import annotations

from dataclasses import dataclass

from modalign.registry import Registry

__all__ = ["TEMPLATES", "Template", "measuring_templates", "training_templates"]


@dataclass(frozen=True)
class Template:
    """A sequence layout: its name, what it is, and the jobs it serves."""

    name: str
    description: str
    measures: bool  # an adapter lays out MIR / caption-loss sequences this way
    trains: bool  # a training collator builds batches this way


TEMPLATES: Registry[Template] = Registry("template")
_DECLARED = (
    Template("chat", "the model's own chat template: the image in the user turn, the text as the "
             "assistant turn (MIR's default; LLaVA's SFT stage)", measures=True, trains=True),
    Template("plain", "BOS + image tokens + text (+ end): LLaVA's pre-training layout",
             measures=True, trains=True),
    Template("official", "the official MIR code's protocol: LLaVA's vicuna_v1 conversation with "
             "the text as the assistant turn, every token after the image counted as text",
             measures=True, trains=False),
)  # fmt: skip
for _t in _DECLARED:
    TEMPLATES.register(_t.name)(_t)


def measuring_templates() -> tuple[str, ...]:
    """Names an adapter accepts (`prepare(..., template=...)`)."""
    return tuple(t.name for t in _DECLARED if t.measures)


def training_templates() -> tuple[str, ...]:
    """Names a training stage accepts (`Stage.template`)."""
    return tuple(t.name for t in _DECLARED if t.trains)
