"""Which form a model folder is written in, and why a form is out of reach.

- `llava`: plain transformers LLaVA (`LlavaForConditionalGeneration`, `LlavaProcessor`), what
  every tool reads; for LLaVA's own projector (linear, mlp1x_gelu, mlp2x_gelu) without MoCa or a
  kept LoRA (`llava_form`).
- `custom-code`: model_type modalign_llava with transformers' custom-code convention, for
  `from_pretrained(folder, trust_remote_code=True)` without modalign (`custom_code`): any
  connector, MoCa, a kept LoRA.
- `native`: what the model's own `save_pretrained` writes; portable only for a family
  transformers ships with nothing attached (a Qwen2-VL with MoCa loads with modalign only).

`auto` picks the first of llava, custom-code, native that fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modalign.errors import ConfigError, ModelError
from modalign.methods.extension_record import recorded_extensions
from modalign.models.export.custom_code import custom_code_refusal
from modalign.models.export.llava_form import llava_refusal

__all__ = [
    "AUTO",
    "CUSTOM_CODE",
    "FORMAT_CHOICES",
    "LLAVA",
    "NATIVE",
    "choose_format",
    "native_refusal",
    "refusals",
]

AUTO, LLAVA, CUSTOM_CODE, NATIVE = "auto", "llava", "custom-code", "native"
# What a user may ask for (`save_model(format=...)`, `modalign export --format`).
FORMAT_CHOICES = (AUTO, LLAVA, CUSTOM_CODE)


def native_refusal(config: Mapping[str, Any]) -> str | None:
    """Why plain transformers cannot load the model's own form, or None when it can."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    records = recorded_extensions(config)
    if records:
        return f"transformers would load it without the attached {', '.join(records)}"
    if model_type not in CONFIG_MAPPING_NAMES:
        return f"transformers does not know model_type {model_type!r}"
    return None


def refusals(config: Mapping[str, Any], processor: Any = None) -> dict[str, str | None]:
    """{form: why it cannot be written (None: it can)} for a model with this config (a
    `to_dict()` or config.json) and, if given, processor."""
    return {
        LLAVA: llava_refusal(config, processor),
        CUSTOM_CODE: custom_code_refusal(config),
        NATIVE: native_refusal(config),
    }


def choose_format(
    requested: str, config: Mapping[str, Any], processor: Any = None, *, portable: bool = False
) -> str:
    """The form to write: `requested` if it fits (else a ModelError saying why), or for `auto`
    the first of llava, custom-code, native that fits. `portable`: native must load without
    modalign too, else a ModelError gives every form's reason."""
    if requested not in FORMAT_CHOICES:
        raise ConfigError(
            f"unknown format {requested!r}; choose one of {', '.join(FORMAT_CHOICES)}"
        )
    reasons = refusals(config, processor)
    if requested != AUTO:
        if reasons[requested] is not None:
            raise ModelError(f"cannot write the {requested} form: {reasons[requested]}")
        return requested
    for form in (LLAVA, CUSTOM_CODE):
        if reasons[form] is None:
            return form
    if reasons[NATIVE] is None or not portable:
        return NATIVE
    why = "; ".join(f"{form}: {reason}" for form, reason in reasons.items())
    raise ModelError(f"no form of this model loads without modalign ({why})")
