"""Checkpoints in the ecosystem's formats: plain `llava` where the model is one, transformers'
custom-code convention (`auto_map` + generated, self-contained modeling code) otherwise, so that
tools without modalign (lmms-eval, vLLM, any `from_pretrained`) read what `modalign train` wrote.

    choose_format("auto", model.config.to_dict())        # "llava" | "custom-code" | "native"
    refusals(config)                                     # why each form is out of reach
    model, processor = to_llava(model, processor)        # or to_custom_code; then save_pretrained

`modalign.models.save_model` writes the chosen form; `modalign export` converts a folder.
"""

from modalign.models.export.convert import ExportSettings, export_checkpoint, how_to_load
from modalign.models.export.custom_code import (
    AUTO_MAP,
    custom_code_refusal,
    to_custom_code,
    write_custom_code,
)
from modalign.models.export.formats import (
    AUTO,
    CUSTOM_CODE,
    FORMAT_CHOICES,
    LLAVA,
    NATIVE,
    choose_format,
    native_refusal,
    refusals,
)
from modalign.models.export.llava_form import (
    WRITTEN_FROM,
    llava_model,
    llava_refusal,
    to_connector_llava,
    to_llava,
)
from modalign.models.export.portable import ModalignLlavaForConditionalGeneration
from modalign.models.export.remote_code import MODELING_FILE, modeling_source
from modalign.models.export.restore import restore_model, restore_processor

__all__ = [
    "AUTO",
    "AUTO_MAP",
    "CUSTOM_CODE",
    "FORMAT_CHOICES",
    "LLAVA",
    "MODELING_FILE",
    "NATIVE",
    "WRITTEN_FROM",
    "ExportSettings",
    "ModalignLlavaForConditionalGeneration",
    "choose_format",
    "custom_code_refusal",
    "export_checkpoint",
    "how_to_load",
    "llava_model",
    "llava_refusal",
    "modeling_source",
    "native_refusal",
    "refusals",
    "restore_model",
    "restore_processor",
    "to_connector_llava",
    "to_custom_code",
    "to_llava",
    "write_custom_code",
]
