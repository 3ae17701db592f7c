"""(image path, text) pairs from a JSONL or CSV file; image paths relative to the file's folder."""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from modalign.data.images import FileImageLoader, ImageItem, skipped_message
from modalign.data.refs import PairRef
from modalign.data.texts import JSONL_SUFFIXES, TextItem, read_lines
from modalign.errors import DataError

IMAGE_KEYS = ("image", "image_path", "file_name", "path")
TEXT_KEYS = ("text", "caption")


def _pick_key(
    available: Sequence[str], wanted: str | None, aliases: Sequence[str], what: str, where: str
) -> str:
    """Choose the column holding `what`: the one asked for, else the first known alias present."""
    candidates = (wanted,) if wanted else aliases
    for key in candidates:
        if key in available:
            return key
    raise DataError(
        f"{where}: no {what} column (looked for {', '.join(map(repr, candidates))}; "
        f"found {', '.join(map(repr, available)) or 'none'})"
    )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield (line index, object) for each non-blank line of a JSONL file."""
    for index, line in enumerate(read_lines(path)):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{os.fspath(path)!r} line {index + 1}: invalid JSON: {exc.msg}"
            ) from exc
        if not isinstance(record, dict):
            raise DataError(f"{os.fspath(path)!r} line {index + 1}: expected a JSON object")
        yield index, record


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield (data row index, row) for each row of a CSV (or .tsv) file with a header line."""
    text = "\n".join(read_lines(path))
    reader = csv.DictReader(
        io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ","
    )
    try:
        if not reader.fieldnames:
            raise DataError(f"pairs file {os.fspath(path)!r} is empty (no CSV header)")
        for index, row in enumerate(reader):
            yield index, dict(row)
    except csv.Error as exc:
        raise DataError(f"pairs file {os.fspath(path)!r}: not valid CSV ({exc})") from exc


def load_pairs(
    path: str | os.PathLike[str],
    *,
    image_key: str | None = None,
    text_key: str | None = None,
    strict: bool = False,
) -> list[PairRef]:
    """Read a JSONL or CSV pairs file into lazily loaded pair references (no image opened)."""
    src = Path(path)
    if not src.is_file():
        raise DataError(f"pairs file {os.fspath(src)!r} does not exist or is not a file")
    suffix = src.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(src)
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(src)
    else:
        raise DataError(f"pairs file {os.fspath(src)!r}: expected .jsonl, .ndjson, .csv or .tsv")
    base = src.parent
    refs: list[PairRef] = []
    skipped: list[tuple[str, str]] = []
    keys: tuple[str, str] | None = None
    for index, row in rows:
        where = f"{os.fspath(src)!r} row {index}"
        if keys is None:
            keys = (
                _pick_key(list(row), image_key, IMAGE_KEYS, "image", where),
                _pick_key(list(row), text_key, TEXT_KEYS, "text", where),
            )
        image_value, text_value = row.get(keys[0]), row.get(keys[1])
        if not isinstance(image_value, str) or not image_value.strip():
            raise DataError(f"{where}: {keys[0]!r} must be a non-empty path string")
        if not isinstance(text_value, str):
            raise DataError(f"{where}: {keys[1]!r} must be a string")
        image_path = base / image_value
        # No file is opened here: a sampled image is checked (and decoded once) when drawn.
        reason = (
            "empty text"
            if not text_value.strip()
            else None
            if image_path.is_file()
            else "image file not found"
        )
        if reason is not None:
            if strict:
                raise DataError(f"{where}: unusable pair (strict mode): {image_value!r}: {reason}")
            skipped.append((image_value, reason))
            continue
        item = ImageItem(image_value, FileImageLoader(image_path))
        refs.append(PairRef(item, TextItem(index, text_value.strip())))
    total = len(refs) + len(skipped)
    if skipped:
        warnings.warn(skipped_message(os.fspath(src), skipped, total, "pairs"), stacklevel=2)
    if not refs:
        raise DataError(f"pairs file {os.fspath(src)!r} contains no usable pairs ({total} rows)")
    return refs
