"""Lazy pair references: an image loader and a passage, materialised into a `Pair` on demand."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

from PIL import Image

from modalign.data.images import ImageItem, as_rgb
from modalign.data.pairs import Pair
from modalign.data.texts import TextItem


class PairRef(NamedTuple):
    """An image reference and a passage that belong together (pairs files, HF datasets)."""

    image: ImageItem
    text: TextItem

    def load(self) -> Pair:
        """Decode the image and build the `Pair` (raises ValueError if the image is unreadable)."""
        image = self.image.load()
        if isinstance(image, Image.Image) and image.mode != "RGB":
            image = as_rgb(image)
        return Pair(
            image=image,
            image_id=self.image.image_id,
            text=self.text.text,
            text_id=self.text.text_id,
        )


class LazyPairs(Sequence[Pair]):
    """Selected pairs whose images are decoded on access: memory stays flat whatever N is."""

    def __init__(self, refs: list[PairRef]) -> None:
        self.refs = list(refs)

    def __len__(self) -> int:
        return len(self.refs)

    @overload
    def __getitem__(self, index: int) -> Pair: ...
    @overload
    def __getitem__(self, index: slice) -> LazyPairs: ...
    def __getitem__(self, index: int | slice) -> Pair | LazyPairs:
        if isinstance(index, slice):
            return LazyPairs(self.refs[index])
        return self.refs[index].load()

    def __iter__(self) -> Iterator[Pair]:
        return (ref.load() for ref in self.refs)

    def __repr__(self) -> str:
        return f"LazyPairs({len(self.refs)} pairs)"
