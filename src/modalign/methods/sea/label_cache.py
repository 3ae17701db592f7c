"""SEA word-label caches: per image, the top-n words of each patch (indices into a word list)
with their scores, as written by `modalign sea-labels` (modalign.methods.sea.labels). Reading a
cache needs only safetensors; a cache built from another model or word list is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modalign.errors import ConfigError, DataError

MANIFEST = "manifest.json"
FORMAT = 1


def load_words(path: str | os.PathLike[str]) -> list[str]:
    """A word list: one word per line, UTF-8, blank lines skipped, duplicates removed (in order)."""
    src = Path(path)
    if not src.is_file():
        raise DataError(f"word list {os.fspath(src)!r} does not exist")
    try:
        lines = src.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"word list {os.fspath(src)!r} is not UTF-8 text: {exc.reason}") from exc
    words = list(dict.fromkeys(w.strip() for w in lines if w.strip()))
    if not words:
        raise DataError(f"word list {os.fspath(src)!r} is empty")
    return words


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the model's parameter names, shapes and values (what labels depend on)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def words_fingerprint(words: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


@dataclass
class LabelCache:
    """A built label cache: per image id, (P, n) word indices (-1 = none) and scores."""

    root: Path
    manifest: dict[str, Any]
    indices: dict[str, torch.Tensor]
    scores: dict[str, torch.Tensor]

    @property
    def words(self) -> list[str]:
        return list(self.manifest["words"])

    @property
    def grid(self) -> int:
        """Patches per side (SEA's k x k windows need a square grid)."""
        return int(self.manifest["grid"])

    def labels(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        if image_id not in self.indices:
            raise DataError(f"SEA label cache {os.fspath(self.root)!r} has no image {image_id!r}")
        return self.indices[image_id], self.scores[image_id]

    def image_id(self, path: str | os.PathLike[str]) -> str:
        """The cache id of an image path: relative to the folder the cache was built on (paths
        are resolved first), else the path as given."""
        p, base = Path(path).resolve(), Path(self.manifest["image_root"]).resolve()
        return p.relative_to(base).as_posix() if p.is_relative_to(base) else Path(path).as_posix()

    @classmethod
    def load(
        cls, root: str | os.PathLike[str], *, model: Any = None, words: Sequence[str] | None = None
    ) -> LabelCache:
        """Read a finished cache; with `model` / `words`, refuse it if built from others."""
        from safetensors.torch import load_file

        root = Path(root)
        manifest = read_manifest(root)
        if manifest is None or not manifest.get("complete"):
            raise DataError(f"{os.fspath(root)!r} is not a finished SEA label cache")
        if model is not None and manifest["model"] != fingerprint(model):
            raise ConfigError(f"SEA label cache {os.fspath(root)!r} was built with another model")
        if words is not None and manifest["words_sha256"] != words_fingerprint(words):
            raise ConfigError(
                f"SEA label cache {os.fspath(root)!r} was built with another word list"
            )
        indices, scores = {}, {}
        for chunk in manifest["chunks"]:
            tensors = load_file(os.fspath(root / chunk["file"]))
            for k, image_id in enumerate(chunk["images"]):
                indices[image_id] = tensors["indices"][k]
                scores[image_id] = tensors["scores"][k].float()
        return cls(root, manifest, indices, scores)


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
