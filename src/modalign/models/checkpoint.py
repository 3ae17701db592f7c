"""The one way modalign writes a model directory: `save_pretrained` (safetensors) of the model and
its processor into an atomic folder, with the model's extensions (MoCa, kept LoRA) recorded in
config.json and their tensors in model.safetensors, so `load_model(dir)` rebuilds them.

By default the folder is in the most portable form the model has (`modalign.models.export`):
plain `llava` for LLaVA's own projector with nothing attached, else transformers' custom-code
form for LLaVA models (any connector, MoCa, a kept LoRA), else the model's own form.

    save_model(model, processor, "runs/pt/final")
    model = load_model("runs/pt/final", device, dtype)        # identical logits
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_dir
from modalign.errors import ModelError
from modalign.models.export.custom_code import to_custom_code, write_custom_code
from modalign.models.export.formats import AUTO, CUSTOM_CODE, LLAVA, choose_format
from modalign.models.export.llava_form import to_llava
from modalign.models.surgery.extensions import EXTENSIONS, sync_records

__all__ = ["save_model"]


def save_model(
    model: Any,
    processor: Any,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    format: str = AUTO,
) -> Path:
    """Write `model` (+ `processor` unless None) to `out_dir`, all or nothing; returns the path.

    The extension record in the config is refreshed from what is attached first. `format`:
    auto (the most portable form), llava or custom-code (a ModelError saying why, before
    anything is written, when the model has no such form). An existing non-empty `out_dir` is
    refused unless `overwrite`.
    """
    records = sync_records(model)
    chosen = choose_format(format, model.config.to_dict(), processor)
    if chosen == LLAVA:
        try:
            model, processor = to_llava(model, processor)
        except ModelError:  # what the config cannot show (the connector's dtype): auto goes on
            if format != AUTO:
                raise
            chosen = CUSTOM_CODE
    if chosen == CUSTOM_CODE:
        model, processor = to_custom_code(model, processor)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if (
            not (tmp / "model.safetensors").is_file()
            and not (tmp / "model.safetensors.index.json").is_file()
        ):
            raise ModelError(f"{type(model).__name__}.save_pretrained wrote no safetensors weights")
        if processor is not None:
            processor.save_pretrained(tmp)
        for name in records:
            EXTENSIONS[name].save_files(model, tmp)
        if chosen == CUSTOM_CODE:
            write_custom_code(tmp)
    return Path(out_dir)
