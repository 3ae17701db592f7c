"""What `modalign train` reads besides the recipe: the model, the conversations, the MIR
monitor's probe set. Recorded with the stage (`stage_settings.json`, key `inputs`), so that
`modalign train --config RUN/stage_settings.json --out NEW` replays a run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modalign.settings import option, to_dict
from modalign.train.stage import STAGE_DEFAULTS

__all__ = ["TrainInputs"]


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
