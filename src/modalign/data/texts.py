"""Text passages from a plain text file (one per line) or JSONL (`{"text": ...}` per line)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import NamedTuple

from modalign.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".ndjson")


class TextItem(NamedTuple):
    """A passage and its id (the 0-based line index in the source file)."""

    text_id: int | str
    text: str


def read_lines(path: Path) -> list[str]:
    """A UTF-8 file (BOM tolerated) as its lines: split at line feeds only (CR LF too), so a
    form feed or U+2028 inside a passage stays in it; a clear DataError on undecodable bytes,
    naming the line (counted from 1, as editors do)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{os.fspath(path)!r} is not valid UTF-8 (line {line}): {exc.reason}"
        ) from exc
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _jsonl_text(path: Path, index: int, line: str, text_key: str) -> str:
    """Extract the passage from one JSONL line, naming file and line on any problem."""
    where = f"{os.fspath(path)!r} line {index + 1}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: invalid JSON: {exc.msg}") from exc
    if isinstance(record, str):
        return record
    if not isinstance(record, dict) or text_key not in record:
        raise DataError(f"{where}: expected an object with a {text_key!r} key")
    value = record[text_key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {text_key!r} must be a string, got {type(value).__name__}")
    return value


def load_texts(path: str | os.PathLike[str], text_key: str = "text") -> list[TextItem]:
    """Load passages: JSONL for .jsonl/.ndjson, else one per line; blank ones skipped, ids kept."""
    src = Path(path)
    if not src.is_file():
        raise DataError(f"text file {os.fspath(src)!r} does not exist or is not a file")
    is_jsonl = src.suffix.lower() in JSONL_SUFFIXES
    items: list[TextItem] = []
    empty_records = 0
    for index, raw in enumerate(read_lines(src)):
        if not raw.strip():
            continue
        text = _jsonl_text(src, index, raw, text_key) if is_jsonl else raw
        text = text.strip()
        if not text:
            empty_records += 1
            continue
        items.append(TextItem(index, text))
    if empty_records:
        warnings.warn(
            f"skipped {empty_records} records with an empty {text_key!r} in {os.fspath(src)!r}",
            stacklevel=2,
        )
    if not items:
        raise DataError(f"text file {os.fspath(src)!r} contains no passages (empty or blank)")
    return items
