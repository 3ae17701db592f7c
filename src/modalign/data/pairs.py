"""The unit of evaluation: one image and one text passage (relevance between them is optional)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from modalign.errors import DataError


@dataclass(frozen=True)
class Pair:
    """One image/text pair fed to an LVLM; ids are recorded in results for reproducibility."""

    image: Image.Image  # RGB
    image_id: str  # e.g. the file path relative to the image folder
    text: str
    text_id: int | str  # e.g. the line index in the text file

    def __post_init__(self) -> None:
        if not isinstance(self.image, Image.Image):
            raise TypeError(f"Pair.image must be a PIL image, got {type(self.image).__name__}")
        if not self.text or not self.text.strip():
            raise DataError(f"empty text passage (text_id={self.text_id!r})")
