"""Per-checkpoint measurement records, cached on disk under a key made of what determines them:
the model's identity, the probe data's content and the measurement settings. Changing any of
the three gives a new key, so a stale record is never reused; nothing is ever deleted.

A local model is identified by its resolved path, the hash of its config.json and the name,
size and modification time of each top-level file (a retrained checkpoint in the same folder
gets a new key); a hub id by the id alone (pin revisions by downloading them to folders).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json
from modalign.data.pairs import Pair


def model_identity(model: str) -> dict[str, Any]:
    """What identifies a model's weights: a local folder's files, or a hub id."""
    path = Path(model)
    if not path.is_dir():
        return {"hub_id": model}
    config = path / "config.json"
    files = sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()
    )
    return {
        "path": str(path.resolve()),
        "config_sha256": _sha256(config.read_bytes()) if config.is_file() else None,
        "files": [list(f) for f in files],
    }


def data_fingerprint(pairs: Iterable[Pair]) -> str:
    """sha256 over every pair's ids, text and decoded pixels (decodes each image once)."""
    h = hashlib.sha256()
    for p in pairs:
        image = p.image
        head = json.dumps([str(p.image_id), str(p.text_id), p.text, image.mode, image.size])
        h.update(head.encode("utf-8"))
        h.update(image.tobytes())
    return h.hexdigest()


def cache_key(identity: dict[str, Any], data: str, settings: dict[str, Any]) -> str:
    """A short stable key of (model identity, data fingerprint, settings)."""
    blob = json.dumps({"model": identity, "data": data, "settings": settings}, sort_keys=True)
    return _sha256(blob.encode("utf-8"))[:20]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MeasureCache:
    """Records as DIR/KEY.json, written atomically (a killed run leaves no partial record)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The record under `key`, or None (missing or unreadable: it is measured again)."""
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> Path:
        return atomic_write_json(self.path(key), record)
