"""The model class of custom-code checkpoints: a ConnectorLlavaForConditionalGeneration that
rebuilds the extensions its config records (MoCa, a kept LoRA) as it is constructed, so a plain
`from_pretrained` loads their tensors like any other weight.

It runs inside the generated `modeling_modalign_llava.py` (`remote_code`), where neither modalign
nor peft is installed: MoCa is modalign's own module and hooks, the LoRA is `PlainLoraLinear`.
modalign loads the same folders natively (its registered classes, then the extension contract of
`modalign.models.surgery.extensions`), so this class is only what other tools run.
"""

from __future__ import annotations

from typing import Any

from modalign.errors import ModelError
from modalign.methods.extension_record import recorded_extensions
from modalign.methods.lora import EXTENSION as LORA_EXTENSION
from modalign.methods.lora_layer import attach_plain_lora
from modalign.methods.moca import ATTR as MOCA_ATTR
from modalign.methods.moca import rebuild_moca
from modalign.models.surgery.connector_llava import (
    ConnectorLlavaConfig,
    ConnectorLlavaForConditionalGeneration,
)

__all__ = ["PORTABLE_EXTENSIONS", "ModalignLlavaForConditionalGeneration"]

# The recorded extensions the exported code rebuilds, in the order it attaches them.
PORTABLE_EXTENSIONS = (LORA_EXTENSION, MOCA_ATTR)


class ModalignLlavaForConditionalGeneration(ConnectorLlavaForConditionalGeneration):
    """ConnectorLlavaForConditionalGeneration + the recorded MoCa / kept LoRA, built at init."""

    # MoCa's u, v and LoRA adapters stay float32 in a half-precision model, as modalign keeps them.
    _keep_in_fp32_modules_strict = [MOCA_ATTR, "lora_A", "lora_B"]  # noqa: RUF012

    def __init__(self, config: ConnectorLlavaConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        records = recorded_extensions(config)
        unknown = sorted(set(records) - set(PORTABLE_EXTENSIONS))
        if unknown:
            raise ModelError(
                f"the config records model extension(s) {', '.join(unknown)} that this code "
                f"cannot rebuild (it knows {', '.join(PORTABLE_EXTENSIONS)})"
            )
        if LORA_EXTENSION in records:
            attach_plain_lora(self, records[LORA_EXTENSION])
        if MOCA_ATTR in records:
            rebuild_moca(self, records[MOCA_ATTR])
