"""Image folders: a sorted list of lazily opened images (ids = relative paths).

Listing a folder opens no file: candidates are the files with an image extension PIL knows.
Whether a file really decodes is checked only for the images a run samples (`verify`, which
reads the file without decoding pixels), and each sampled image is decoded once, when used.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from PIL import Image

from modalign.errors import DataError

if TYPE_CHECKING:
    import torch


class ImageItem(NamedTuple):
    """An image id and a zero-argument loader returning the decoded RGB image (opened lazily)."""

    image_id: str
    load: Callable[[], Image.Image]


@dataclass(frozen=True)
class FileImageLoader:
    """Opens one image file on demand, decodes it fully and returns an RGB copy (file closed)."""

    path: Path

    def __call__(self) -> Image.Image:
        return open_rgb(self.path)

    def verify(self) -> str | None:
        """None if the file is a readable image (checked without decoding), else why not."""
        if not self.path.is_file():
            return "file not found"
        return verify_image(self.path)


@dataclass
class ImageScan:
    """Result of scanning a folder: readable images plus (relative path, reason) of skipped files."""

    items: list[ImageItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# Integer modes wider than 8 bits, by the largest value their samples can hold.
_WIDE_INT_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def as_rgb(image: Image.Image) -> Image.Image:
    """The image as an 8-bit RGB picture, as a viewer shows it (and as transformers' own
    `load_image` reads files): EXIF orientation applied; high-bit-depth samples scaled from their
    type's range (16-bit: / 257) instead of clipped to white; 32-bit integer images scaled from
    16 bits when their values fit in 16 bits (PNG's 16-bit greyscale often opens as mode I),
    else from their own maximum; float images read as [0, 1] (clipped); an alpha channel is
    dropped as Pillow's RGB conversion does (LLaVA's loading does the same).
    """
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode in _WIDE_INT_MODES or image.mode in ("I", "F"):
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 1.0
        elif image.mode == "I":
            top = float(values.max(initial=0.0))
            scale = 65535.0 if top <= 65535 else top
        else:
            scale = float(_WIDE_INT_MODES[image.mode])
        eight = np.clip(np.rint(values / scale * 255.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(eight, mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def open_rgb(path: str | os.PathLike[str] | Any) -> Image.Image:
    """Decode an image file (or file object) into an RGB PIL image (`as_rgb`); a clear
    DataError if it cannot be decoded."""
    where = os.fspath(path) if isinstance(path, str | os.PathLike) else "<bytes>"
    try:
        with Image.open(path) as img:
            img.load()
            return as_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {where!r}: {exc}") from exc


def verify_image(path: str | os.PathLike[str]) -> str | None:
    """Return None if PIL recognises and verifies the file as an image, else the reason why not."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error ...)
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _walk_files(root: Path) -> list[Path]:
    """All files under root (recursive, symlinks followed once), hidden ones excluded, sorted."""
    found: list[Path] = []
    seen: set[str] = set()  # real paths of visited folders: a symlink cycle is walked only once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def image_suffixes() -> frozenset[str]:
    """File suffixes PIL can open (lower case, with the dot)."""
    Image.init()
    return frozenset(Image.registered_extensions())


def scan_images(directory: str | os.PathLike[str], *, strict: bool = False) -> ImageScan:
    """List a folder recursively without opening files; files that are not image types are
    skipped (or, strict, rejected). Unreadable image files are found when sampled."""
    root = Path(directory)
    if not root.exists():
        raise DataError(f"image folder {os.fspath(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"image folder {os.fspath(root)!r} is not a directory")
    suffixes = image_suffixes()
    scan = ImageScan()
    for path in _walk_files(root):
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() not in suffixes:
            reason = f"not an image file type ({path.suffix or 'no suffix'})"
            if strict:
                raise DataError(f"not an image (strict mode): {os.fspath(path)!r}: {reason}")
            scan.skipped.append((rel, reason))
            continue
        scan.items.append(ImageItem(rel, FileImageLoader(path)))
    return scan


def skipped_message(
    where: str, skipped: list[tuple[str, str]], total: int, what: str = "files"
) -> str:
    """One warning line: how many entries were skipped, and the first few names with reasons."""
    shown = "; ".join(f"{name} ({reason})" for name, reason in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"skipped {len(skipped)} of {total} {what} in {where}: {shown}{more}"


def load_images(directory: str | os.PathLike[str], strict: bool = False) -> list[ImageItem]:
    """List the images of a folder (recursive, sorted) as (relative path, lazy RGB loader)."""
    scan = scan_images(directory, strict=strict)
    total = len(scan.items) + len(scan.skipped)
    if scan.skipped:
        message = skipped_message(os.fspath(directory), scan.skipped, total, "files (not images)")
        warnings.warn(message, stacklevel=2)
    if not scan.items:
        detail = f" ({total} files, none an image type)" if total else " (no files found)"
        raise DataError(f"image folder {os.fspath(directory)!r} contains no images{detail}")
    return scan.items


def pixel_values_of(processor: Any, images: Sequence[Image.Image]) -> torch.Tensor:
    """(B, C, H, W) pixels from the processor's own image processor, images placed on the canvas
    first when the processor tiles them (as its own __call__ does)."""
    pad = getattr(processor, "pad_images", None)
    images = pad(list(images)) if pad is not None else list(images)
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]
