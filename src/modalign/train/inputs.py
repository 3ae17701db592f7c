"""What `modalign train` reads besides the recipe: the model, the conversations, the MIR
monitor's probe set. Recorded with the stage (`stage_settings.json`, key `inputs`), so that
`modalign train --config RUN/stage_settings.json --out NEW` replays a run."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modalign.errors import DataError, ModalignError
from modalign.settings import from_mapping, option, to_dict
from modalign.train.stage import STAGE_DEFAULTS, STARTED, SUMMARY

__all__ = ["TrainInputs", "recorded_inputs"]


@dataclass(frozen=True)
class TrainInputs:
    """The inputs of one training stage run from the command line."""

    model: str = option(
        help="HF model id or checkpoint folder (LLaVA family)", metavar="PATH_OR_ID"
    )
    data: Path = option(help="LLaVA conversation .json / .jsonl", metavar="FILE")
    image_folder: Path | None = option(
        None, help="folder the records' image paths are under", metavar="DIR"
    )
    stage: str = option(
        "pretrain", choices=tuple(STAGE_DEFAULTS),
        help="pretrain: plain template, connector only (lr 1e-3); sft: chat template, "
        "connector + LLM (lr 2e-5)",
    )  # fmt: skip
    limit: int | None = option(None, help="use the first N records (nested prefixes)")
    dtype: str = option("float32", help="weights dtype: float32 | bfloat16 | float16")
    mir_images: Path | None = option(None, help="MIR monitor probe: image folder", metavar="DIR")
    mir_texts: Path | None = option(
        None, help="MIR monitor probe: passages (one per line)", metavar="FILE"
    )
    mir_pairs: Path | None = option(
        None, help="MIR monitor probe: (image, text) pairs file", metavar="FILE"
    )

    def absolute(self) -> TrainInputs:
        """Local paths made absolute (a hub id stays as it is), so a record replays anywhere."""
        paths = {
            name: Path(value).expanduser().resolve()
            for name in ("data", "image_folder", "mir_images", "mir_texts", "mir_pairs")
            if (value := getattr(self, name)) is not None
        }
        local = Path(self.model).expanduser()
        model = str(local.resolve()) if local.exists() else self.model
        return replace(self, model=model, **paths)

    def to_dict(self) -> dict[str, Any]:
        return {name: to_dict(value) for name, value in vars(self).items()}


def recorded_inputs(model_dir: str | Path) -> TrainInputs | None:
    """The inputs a `modalign train` run recorded, found from the model folder it saved
    (RUN/model -> RUN/stage.json, or RUN/stage_settings.json before it finished); None where
    `model_dir` is no such folder or its record holds no inputs (a run of the Python API).
    DataError for a record that cannot be read."""
    model_dir = Path(model_dir)
    if model_dir.name != "model" or not model_dir.is_dir():
        return None
    for name, key in ((SUMMARY, "settings"), (STARTED, None)):
        path = model_dir.parent / name
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            settings = record.get(key) if key else record
            inputs = settings.get("inputs") if isinstance(settings, dict) else None
            return None if inputs is None else from_mapping(TrainInputs, inputs, "inputs")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError,
                ModalignError) as exc:  # fmt: skip
            raise DataError(f"{path}: not a readable stage record ({exc})") from None
    return None
