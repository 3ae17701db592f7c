"""What the commands that run a model over probe pairs (`mir --model`, `validate`) share: where
the image/text pairs come from (`ProbeData`, declared once, its flags generated), the
`--config FILE` reading, and the shipped demo standing in for what the user left out
(`resolve_probe`), decided once, before any work."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError, DataError
from modalign.settings import add_options, load_config, option, split_config


@dataclass(frozen=True)
class ProbeData:
    """Where the probe pairs come from: a folder of images with a text file, a pairs file, or
    a dataset (exactly one)."""

    # (option() is a dataclasses.field: RUF009 does not know it)
    images: Path | None = option(None, help="folder of images (paired at random with --texts)")
    texts: Path | None = option(None, help="text file (one passage per line) or JSONL")
    pairs: Path | None = option(None, help="JSONL/CSV of (image, text) pairs")
    dataset: str | None = option(None, help="Hugging Face dataset name or saved dataset folder")
    dataset_split: str = option("train", help="dataset split")
    image_column: str = option("image", help="dataset image column")
    text_column: str = option("text", help="dataset text column")
    strict: bool = option(False, help="fail on unreadable images/rows")

    @property
    def given(self) -> bool:
        """Whether any data was named."""
        return bool(self.images or self.texts or self.pairs or self.dataset)

    def reads(self) -> list[Any]:
        """The files and folders these settings read (outputs must not land on them)."""
        return [self.images, self.texts, self.pairs, self.dataset]

    def source(self) -> Any:
        """The `SampleSource` these settings describe."""
        from modalign.data import SampleSource

        return SampleSource.from_args(
            images=self.images,
            texts=self.texts,
            pairs=self.pairs,
            hf_dataset=self.dataset,
            split=self.dataset_split,
            image_column=self.image_column,
            text_column=self.text_column,
            strict=self.strict,
        )


@dataclass(frozen=True)
class ModelChoice:
    """The model a run scores (`modalign mir`)."""

    model: str | None = option(
        None,
        help="Hugging Face model id or local checkpoint directory (default: the shipped demo "
        "model, on its held-out eval set unless data is given)",
    )


@dataclass(frozen=True)
class Probe:
    """What a run measures, resolved: the model (None where the command takes several), the
    data, and, where the shipped demo stands in for something not given, a sentence saying so."""

    model: str | None
    data: ProbeData
    note: str | None = None


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The `ProbeData` flags (dest `data.*`), in their own help group."""
    add_options(parser.add_argument_group("probe data"), ProbeData, path="data")


def read_config(args: argparse.Namespace, sections: dict[str, type]) -> dict[str, dict]:
    """The `--config` file (if given) split by settings section; unknown keys refused."""
    path = getattr(args, "config", None)
    if path is None:
        return {name: {} for name in sections}
    try:
        return split_config(load_config(path), sections)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None


def resolve_probe(model: str | None, data: ProbeData, *, demo_model: bool) -> Probe:
    """Fill in the shipped demo (`modalign.assets`) where it stands in: its model when
    `demo_model` and no model is given, its held-out eval set when no data is given and the
    demo model is scored or no model is named (validate measures the checkpoints it is given)."""
    from modalign.assets import default_dir, default_model_path

    notes = []
    if demo_model and not model:
        try:
            model = str(default_model_path())
        except DataError as exc:
            raise ConfigError(f"no --model given and {exc}") from exc
        notes.append("the shipped demo model (modalign.assets, a small pre-trained LLaVA)")
    if not data.given and (notes or model is None):
        eval_dir = default_dir() / "eval"
        data = dataclasses.replace(
            data, images=eval_dir / "images", texts=eval_dir / "passages.txt"
        )
        where = "its" if notes else "the shipped demo's"
        notes.append(f"{where} held-out eval set ({eval_dir})")
    elif notes:
        notes.append("the data given")
    if not notes:
        return Probe(model, data)
    if demo_model:
        note = f"no --model given: scoring {notes[0]} on {notes[1]}"
    else:
        note = f"no probe data given: measuring on {notes[0]}"
    return Probe(model, data, note)
