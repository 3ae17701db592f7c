"""Pairs from a Hugging Face `datasets` dataset (a saved dataset folder or a hub/local name)."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from modalign.data.images import ImageItem, as_rgb, open_rgb, skipped_message
from modalign.data.refs import PairRef
from modalign.data.texts import TextItem
from modalign.errors import DataError

SAVED_MARKERS = ("dataset_dict.json", "state.json")


@dataclass(frozen=True)
class HFImageLoader:
    """Decodes one row's image on demand from a dataset restricted to its image column."""

    dataset: Any  # datasets.Dataset with only the image column
    column: str
    index: int

    def __call__(self) -> Image.Image:
        return to_rgb(self.dataset[self.index][self.column], f"row {self.index}")


def to_rgb(value: object, where: str) -> Image.Image:
    """Turn a dataset image cell (PIL image, path, or {'bytes', 'path'} dict) into an RGB image."""
    if isinstance(value, Image.Image):
        return as_rgb(value)
    if isinstance(value, str):
        return open_rgb(value)
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        if value.get("bytes"):
            return open_rgb(io.BytesIO(value["bytes"]))
        return open_rgb(str(value["path"]))
    raise DataError(f"{where}: image cell of type {type(value).__name__} is not an image")


def _passage(value: object) -> str:
    """A passage from a text cell: the string itself, or the first non-empty string of a list."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list | tuple):
        return next((v.strip() for v in value if isinstance(v, str) and v.strip()), "")
    return ""


def _open_dataset(name_or_path: str | os.PathLike[str], split: str) -> tuple[Any, str | None]:
    """Load the dataset split: `load_from_disk` for a saved folder, `load_dataset` otherwise."""
    import datasets  # heavy; imported only when a dataset is actually requested

    path = Path(name_or_path)
    if path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS):
        loaded = datasets.load_from_disk(os.fspath(path))
    else:
        try:
            loaded = datasets.load_dataset(os.fspath(name_or_path), split=split)
        except (OSError, ValueError) as exc:  # includes datasets' not-found and connection errors
            raise DataError(f"cannot load dataset {os.fspath(name_or_path)!r}: {exc}") from exc
        return loaded, split
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(
                f"dataset {os.fspath(path)!r} has no split {split!r} (splits: {', '.join(loaded)})"
            )
        return loaded[split], split
    return loaded, None


def load_hf_dataset(
    name_or_path: str | os.PathLike[str],
    split: str = "train",
    image_column: str = "image",
    text_column: str = "text",
    *,
    strict: bool = False,
) -> list[PairRef]:
    """Read (image, text) rows of a dataset split as lazy pair references (ids = row indices)."""
    ds, used_split = _open_dataset(name_or_path, split)
    for column in (image_column, text_column):
        if column not in ds.column_names:
            raise DataError(
                f"dataset {os.fspath(name_or_path)!r} has no column {column!r} "
                f"(columns: {', '.join(ds.column_names)})"
            )
    images = ds.select_columns([image_column])
    prefix = f"{used_split}:" if used_split else ""
    refs: list[PairRef] = []
    skipped: list[tuple[str, str]] = []
    for index, cell in enumerate(ds.select_columns([text_column])[text_column]):
        text = _passage(cell)
        if not text:
            if strict:
                raise DataError(f"dataset row {index}: empty {text_column!r} (strict mode)")
            skipped.append((f"row {index}", f"empty {text_column!r}"))
            continue
        loader = HFImageLoader(images, image_column, index)
        refs.append(PairRef(ImageItem(f"{prefix}{index}", loader), TextItem(index, text)))
    total = len(refs) + len(skipped)
    if skipped:
        where = f"dataset {os.fspath(name_or_path)!r}"
        warnings.warn(skipped_message(where, skipped, total, "rows"), stacklevel=2)
    if not refs:
        raise DataError(f"dataset {os.fspath(name_or_path)!r} has no usable rows ({total} rows)")
    return refs
