"""Lazy pair references: an image loader and a passage, materialised into a `Pair` on demand."""

from __future__ import annotations

from typing import NamedTuple

from modalign.data.images import ImageItem
from modalign.data.pairs import Pair
from modalign.data.texts import TextItem


class PairRef(NamedTuple):
    """An image reference and a passage that belong together (pairs files, HF datasets)."""

    image: ImageItem
    text: TextItem

    def load(self) -> Pair:
        """Decode the image and build the `Pair` (raises ValueError if the image is unreadable)."""
        return Pair(
            image=self.image.load(),
            image_id=self.image.image_id,
            text=self.text.text,
            text_id=self.text.text_id,
        )
