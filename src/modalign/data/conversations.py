"""Training data in the format LLaVA users already have: a conversation JSON + an image folder.

    [{"id": "000001", "image": "coco/0001.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                        {"from": "gpt", "value": "A red circle."}, ...]}, ...]

(`.json` list or `.jsonl`, one record per line.) Records are validated when the file is read
(structure, alternating turns, the image file exists); nothing is decoded until a sample is used,
and each sample's image is decoded once, then.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from modalign.data.images import open_rgb
from modalign.data.texts import read_lines
from modalign.errors import DataError

IMAGE_MARKER = "<image>"  # where the image goes in a human turn (LLaVA's DEFAULT_IMAGE_TOKEN)
HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")


@dataclass(frozen=True)
class Conversation:
    """One training record: an optional image and (human, assistant) turns, image marker removed."""

    id: str
    image: Path | None
    turns: tuple[tuple[str, str], ...]

    @property
    def caption(self) -> str:
        """The first assistant reply: the caption of a pre-training record."""
        return self.turns[0][1]


@dataclass(frozen=True)
class Sample:
    """A conversation with its decoded image (what collators receive)."""

    conversation: Conversation
    image: Image.Image | None


def _turns(record: dict, where: str, has_image: bool) -> tuple[tuple[str, str], ...]:
    """(human, assistant) pairs from a record's `conversations`, validated. The image marker may
    stand once, in the first human turn, and only in a record with an image; a record with an
    image and no marker gets its image before the first question (LLaVA's layout)."""
    messages = record.get("conversations")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'conversations' must be a non-empty list")
    if len(messages) % 2:
        raise DataError(f"{where}: {len(messages)} messages; turns must come in human/gpt pairs")
    turns = []
    for k in range(0, len(messages), 2):
        human, reply = messages[k], messages[k + 1]
        for i, msg, roles in ((k, human, HUMAN_ROLES), (k + 1, reply, ASSISTANT_ROLES)):
            if not isinstance(msg, dict) or msg.get("from") not in roles:
                got = msg.get("from") if isinstance(msg, dict) else type(msg).__name__
                raise DataError(f"{where}: message {i}: expected from={roles[0]!r}, got {got!r}")
            if not isinstance(msg.get("value"), str):
                raise DataError(f"{where}: message {i}: 'value' must be a string")
        markers = human["value"].count(IMAGE_MARKER)
        if IMAGE_MARKER in reply["value"]:
            raise DataError(f"{where}: message {k + 1}: {IMAGE_MARKER} in an assistant reply "
                            "(the image goes in the first human turn)")  # fmt: skip
        if markers and not has_image:
            raise DataError(f"{where}: message {k}: {IMAGE_MARKER} in a record without 'image'")
        if markers > 1 or (markers and k > 0):
            raise DataError(f"{where}: message {k}: {IMAGE_MARKER} must stand once, in the first "
                            "human turn (one image per record)")  # fmt: skip
        question = human["value"].replace(IMAGE_MARKER, "").strip()
        answer = reply["value"].strip()
        if not answer:
            raise DataError(f"{where}: message {k + 1}: empty assistant reply")
        turns.append((question, answer))
    return tuple(turns)


def _records(path: Path) -> list[tuple[str, object]]:
    """(location, record) for each record of a .json list or a .jsonl file."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        out = []
        for i, line in enumerate(read_lines(path)):
            if line.strip():
                try:
                    out.append((f"{os.fspath(path)!r} line {i + 1}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{os.fspath(path)!r} line {i + 1}: invalid JSON: {exc.msg}"
                    ) from exc
        return out
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{os.fspath(path)!r} is not UTF-8 text: {exc.reason}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{os.fspath(path)!r}: invalid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise DataError(f"{os.fspath(path)!r}: expected a JSON list of conversation records")
    return [(f"{os.fspath(path)!r} record {i}", r) for i, r in enumerate(data)]


def load_conversations(
    path: str | os.PathLike[str],
    image_folder: str | os.PathLike[str] | None,
    *,
    require_image: bool = True,
    limit: int | None = None,
) -> list[Conversation]:
    """Read and validate a LLaVA conversation file; `limit` keeps the first N records (nested
    prefixes of a fixed-order file, like the official `--data_scale`)."""
    src = Path(path)
    if not src.is_file():
        raise DataError(f"conversation file {os.fspath(src)!r} does not exist")
    folder = Path(image_folder) if image_folder is not None else src.parent
    out: list[Conversation] = []
    for where, record in _records(src)[:limit]:
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        rid = str(record.get("id", len(out)))
        where = f"{where} (id {rid})"
        image = record.get("image")
        if image is None:
            if require_image:
                raise DataError(f"{where}: no 'image' (this stage trains on image-text pairs)")
            path_ = None
        else:
            if not isinstance(image, str) or not image:
                raise DataError(f"{where}: 'image' must be a relative path string")
            path_ = folder / image
            if not path_.is_file():
                raise DataError(f"{where}: image {image!r} not found in {os.fspath(folder)!r}")
        out.append(Conversation(rid, path_, _turns(record, where, path_ is not None)))
    if not out:
        raise DataError(f"conversation file {os.fspath(src)!r} has no records")
    return out


def data_identity(conversations: Sequence[Conversation]) -> dict[str, Any]:
    """{"records": n, "sha256": ...} over every record's id, turns and image (its path relative
    to the images' common folder, and its size): a run can tell whether it resumes on the data
    it started with, wherever the data folder now lives."""
    images = [c.image for c in conversations if c.image is not None]
    root = Path(os.path.commonpath([str(p.resolve()) for p in images])) if images else None
    h = hashlib.sha256()
    for c in conversations:
        image = None
        if c.image is not None:
            resolved = c.image.resolve()
            rel = resolved.relative_to(root) if root != resolved else Path(resolved.name)
            image = [rel.as_posix(), resolved.stat().st_size]
        h.update(json.dumps([c.id, image, c.turns], ensure_ascii=False).encode("utf-8"))
    return {"records": len(conversations), "sha256": h.hexdigest()}


def check_images(conversations: Sequence[Conversation], *, progress: bool = True) -> None:
    """Every image the records reference opens as an image (headers and data read, nothing
    decoded into memory): a DataError naming the first bad ones, before any model loads."""
    from tqdm.auto import tqdm

    from modalign.data.images import verify_image

    unique = list(dict.fromkeys(c.image for c in conversations if c.image is not None))
    bad = []
    for path in tqdm(unique, desc="checking images", unit="image", disable=not progress or
                     len(unique) < 500, file=sys.stderr, leave=False):  # fmt: skip
        problem = verify_image(path)
        if problem is not None:
            bad.append(f"{os.fspath(path)!r} ({problem})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DataError(f"{len(bad)} image(s) cannot be read: {'; '.join(bad[:3])}{more}")


def write_conversations(path: str | os.PathLike[str], records: Sequence[dict]) -> Path:
    """Write records in LLaVA's format (atomically); the lab uses it to export its data."""
    from modalign.atomic import atomic_write_json

    return atomic_write_json(path, list(records))


class ConversationDataset(Dataset):
    """Index -> Sample; the image is decoded on access (once per use)."""

    def __init__(self, conversations: Sequence[Conversation]) -> None:
        if not conversations:
            raise DataError("no training conversations")
        self.conversations = list(conversations)

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> Sample:
        conv = self.conversations[index]
        image = open_rgb(conv.image) if conv.image is not None else None
        return Sample(conv, image)
