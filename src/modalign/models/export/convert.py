"""Convert a model folder modalign loads into a form tools without modalign load (`modalign
export`): every check that can be made from config.json and the paths comes before the model is
loaded, and nothing is written unless the whole folder is.

    form = export_checkpoint("runs/sft/model", "exported/", ExportSettings(...).format)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from modalign.atomic import check_not_an_input, check_writable
from modalign.errors import ConfigError, ModelError
from modalign.models.export.formats import AUTO, CUSTOM_CODE, FORMAT_CHOICES, choose_format
from modalign.models.export.restore import restored_config
from modalign.settings import option

__all__ = ["ExportSettings", "export_checkpoint", "how_to_load"]


@dataclass(frozen=True)
class ExportSettings:
    """What `modalign export` writes, and where."""

    out: Path = option(help="new (or empty) folder for the converted checkpoint", metavar="DIR")
    format: str = option(
        AUTO, choices=FORMAT_CHOICES,
        help="llava: plain transformers LLaVA (LLaVA's projector, no MoCa or kept LoRA); "
        "custom-code: transformers' trust_remote_code convention (any connector, MoCa, LoRA); "
        "auto: llava where possible, else custom-code",
    )  # fmt: skip


def _stored_dtype(config: dict) -> str:
    """The dtype the checkpoint's weights were saved in (config.json), float32 if unrecorded."""
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(name)


def export_checkpoint(source: str, out: str | os.PathLike[str], format: str = AUTO) -> str:
    """Write the checkpoint at `source` to the new folder `out` in `format` (auto, llava,
    custom-code), keeping its weights' dtype; returns the form written. A form the model does
    not have, or no form that loads without modalign, is a ModelError before anything is
    written; so is an `out` that exists with files in it or overlaps `source`."""
    from modalign.models.checkpoint import save_model
    from modalign.models.loading import (
        load_model,
        load_processor,
        read_config_json,
        refuse_remote_code,
    )

    target = Path(out)
    check_writable(target / "config.json", "--out")
    check_not_an_input(target, "--out", [source], folder=True)
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"--out {os.fspath(target)!r} exists and is not empty")
    config = read_config_json(source)
    if not isinstance(config, dict):
        raise ModelError(f"{source}: no config.json, not a model folder")
    refuse_remote_code(source)
    choose_format(format, restored_config(config), portable=True)  # before the (slow) load
    model = load_model(source, "cpu", _stored_dtype(config))
    processor = load_processor(source)
    form = choose_format(format, model.config.to_dict(), processor, portable=True)
    # save_model's auto writes the same form (native only where llava and custom-code are out)
    save_model(model, processor, target, format=form if form in FORMAT_CHOICES else AUTO)
    return form


def how_to_load(form: str, folder: str | os.PathLike[str]) -> str:
    """The line that loads a folder written in `form` with plain transformers."""
    trust = ", trust_remote_code=True" if form == CUSTOM_CODE else ""
    return f"AutoModelForImageTextToText.from_pretrained({os.fspath(folder)!r}{trust})"
