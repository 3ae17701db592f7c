"""One entry point for the CLI: images dir + texts file, a pairs file, or an HF dataset -> Pairs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modalign.data.hf import load_hf_dataset
from modalign.data.images import ImageItem, load_images
from modalign.data.pairs import Pair
from modalign.data.pairs_file import load_pairs
from modalign.data.refs import LazyPairs, PairRef
from modalign.data.sampling import sample_pairs, sample_refs
from modalign.data.texts import TextItem, load_texts
from modalign.errors import ConfigError


@dataclass
class SampleSource:
    """Where evaluation samples come from; `sample(n, seed)` returns the seeded list of Pairs.

    Exactly one of: `images` + `texts` (independent pools, paired at random), or `refs`
    (pairs that belong together). `description` records the origin for the result metadata.
    """

    images: list[ImageItem] | None = None
    texts: list[TextItem] | None = None
    refs: list[PairRef] | None = None
    description: dict[str, Any] = field(default_factory=dict)
    strict: bool = False
    verified: set[str] = field(default_factory=set, repr=False)  # image ids known to decode

    def __post_init__(self) -> None:
        pools = self.images is not None or self.texts is not None
        if pools == (self.refs is not None):
            raise ConfigError(
                "give either images and texts, or paired references, not both/neither"
            )
        if pools and (not self.images or not self.texts):
            raise ConfigError("both images and texts are needed (one of them is missing or empty)")

    @classmethod
    def from_folder(
        cls, images: str | os.PathLike[str], texts: str | os.PathLike[str], *, strict: bool = False
    ) -> SampleSource:
        """An image folder and a text file of passages (image id = relative path, text id = line)."""
        image_items = load_images(images, strict=strict)
        text_items = load_texts(texts)
        info = {"kind": "folder", "images": os.fspath(images), "texts": os.fspath(texts)}
        return cls(images=image_items, texts=text_items, description=info, strict=strict)

    @classmethod
    def from_pairs_file(cls, path: str | os.PathLike[str], *, strict: bool = False) -> SampleSource:
        """A JSONL/CSV file of (image path, text) pairs (image id = path as written, text id = row)."""
        refs = load_pairs(path, strict=strict)
        return cls(
            refs=refs, description={"kind": "pairs", "pairs": os.fspath(path)}, strict=strict
        )

    @classmethod
    def from_hf(
        cls,
        name_or_path: str | os.PathLike[str],
        split: str = "train",
        image_column: str = "image",
        text_column: str = "text",
        *,
        strict: bool = False,
    ) -> SampleSource:
        """A Hugging Face dataset split (saved folder or name); ids are row indices."""
        refs = load_hf_dataset(name_or_path, split, image_column, text_column, strict=strict)
        info = {
            "kind": "hf_dataset",
            "dataset": os.fspath(name_or_path),
            "split": split,
            "image_column": image_column,
            "text_column": text_column,
        }
        return cls(refs=refs, description=info, strict=strict)

    @classmethod
    def from_args(
        cls,
        *,
        images: str | os.PathLike[str] | None = None,
        texts: str | os.PathLike[str] | None = None,
        pairs: str | os.PathLike[str] | None = None,
        hf_dataset: str | os.PathLike[str] | None = None,
        split: str = "train",
        image_column: str = "image",
        text_column: str = "text",
        strict: bool = False,
    ) -> SampleSource:
        """Pick the source from CLI-style options, rejecting missing or conflicting combinations."""
        given = [
            name
            for name, v in (
                ("images/texts", images or texts),
                ("pairs", pairs),
                ("hf_dataset", hf_dataset),
            )
            if v
        ]
        if len(given) != 1:
            raise ConfigError(
                "give exactly one input: --images DIR with --texts FILE, or --pairs FILE, "
                f"or --dataset NAME (got {', '.join(given) or 'none'})"
            )
        if pairs:
            return cls.from_pairs_file(pairs, strict=strict)
        if hf_dataset:
            return cls.from_hf(hf_dataset, split, image_column, text_column, strict=strict)
        if not images or not texts:
            raise ConfigError("--images and --texts must be given together")
        return cls.from_folder(images, texts, strict=strict)

    def __len__(self) -> int:
        """How many pairs can be drawn at most."""
        if self.refs is not None:
            return len(self.refs)
        return min(len(self.images or ()), len(self.texts or ()))

    def sample(
        self, n: int | None = 100, seed: int = 0, *, lazy: bool = False
    ) -> list[Pair] | LazyPairs:
        """The seeded selection of N pairs (reproducible; see `sample_pairs`); lazy: decode on use."""
        if self.refs is not None:
            return sample_refs(
                self.refs, n, seed, strict=self.strict, lazy=lazy, verified=self.verified
            )
        assert self.images is not None and self.texts is not None  # guaranteed by __post_init__
        return sample_pairs(
            self.images, self.texts, n, seed, strict=self.strict, lazy=lazy, verified=self.verified
        )


def sample_ids(pairs: Sequence[Pair]) -> list[dict[str, int | str]]:
    """The ids of the pairs used, in order, for the result JSON's `samples` key (no decoding)."""
    if isinstance(pairs, LazyPairs):
        return [{"image": r.image.image_id, "text": r.text.text_id} for r in pairs.refs]
    return [{"image": p.image_id, "text": p.text_id} for p in pairs]
