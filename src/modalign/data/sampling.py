"""Seeded, reproducible selection of N image/text pairs (prefix-stable across N for one seed)."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, overload

from PIL import Image

from modalign.data.images import ImageItem
from modalign.data.pairs import Pair
from modalign.data.refs import LazyPairs, PairRef
from modalign.data.texts import TextItem
from modalign.errors import ConfigError, DataError

ImageLike = ImageItem | tuple[str, Callable[[], Image.Image]]
TextLike = TextItem | tuple[int | str, str] | str


def seeded_order(n: int, seed: int, stream: str) -> Iterator[int]:
    """Yield a seeded random permutation of range(n) lazily (sparse Fisher-Yates, O(k) for k draws).

    Only `random.Random.random()` is used, whose sequence Python guarantees across versions, so a
    (seed, stream) pair selects the same items everywhere; drawing k items costs O(k).
    """
    rng = random.Random(f"modalign:{seed}:{stream}")
    moved: dict[int, int] = {}  # position -> value, only for positions touched so far
    for i in range(n):
        j = i + int(rng.random() * (n - i))  # uniform position in [i, n)
        value_i = moved.pop(i, i)
        if j == i:
            yield value_i
            continue
        value_j = moved.get(j, j)
        moved[j] = value_i  # the swap; position i is never read again
        yield value_j


def _check_n(n: int | None, available: int, what: str, strict: bool) -> int:
    """Validate N; if fewer than N are available, warn and use all (or raise in strict mode)."""
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"number of samples must be a positive integer, got {n!r}")
    if available < n:
        message = f"asked for {n} samples but only {available} {what} are available"
        if strict:
            raise DataError(message + " (strict mode)")
        warnings.warn(message + f"; using all {available}", stacklevel=3)
        return available
    return n


def _as_text(item: TextLike, index: int) -> TextItem:
    """Normalise a passage given as TextItem, (id, text) tuple, or bare string (id = position)."""
    if isinstance(item, str):
        return TextItem(index, item)
    text_id, text = item
    return TextItem(text_id, text)


def _check(ref: PairRef, lazy: bool) -> tuple[Pair | None, str | None]:
    """(decoded pair or None, reason it is unusable or None) for one candidate.

    Lazy: loaders with a `verify()` (image files) are checked without decoding; other loaders
    are decoded once to prove them readable. Eager: decoded once and kept.
    """
    verify = getattr(ref.image.load, "verify", None)
    if lazy and verify is not None:
        return None, verify()
    try:
        return ref.load(), None
    except ValueError as exc:
        return None, str(exc)


def _draw(
    order: Iterator[int],
    make_ref: Callable[[int, int], PairRef],
    n: int,
    strict: bool,
    lazy: bool,
    verified: set[str] | None = None,
) -> list[Pair] | LazyPairs:
    """Take candidates in draw order until n are usable; unusable images are skipped (warned).

    `make_ref(index, slot)` builds the candidate for draw `index` filling output position `slot`.
    Eager: each image is decoded once and kept in the returned Pairs. Lazy: only references are
    kept (see `_check`) and each image is decoded when the Pair is accessed. Image ids in
    `verified` are trusted without checking in lazy mode; ids that pass are added to it.
    """
    kept: list[Pair] = []
    refs: list[PairRef] = []
    skipped: list[str] = []
    for index in order:
        if len(refs) == n:
            break
        ref = make_ref(index, len(refs))
        if lazy and verified is not None and ref.image.image_id in verified:
            refs.append(ref)
            continue
        pair, reason = _check(ref, lazy)
        if reason is not None:
            if strict:
                raise DataError(f"image {ref.image.image_id!r}: {reason} (strict mode)")
            skipped.append(f"image {ref.image.image_id!r} ({reason})")
            continue
        refs.append(ref)
        if verified is not None:
            verified.add(ref.image.image_id)
        if pair is not None and not lazy:
            kept.append(pair)
    if skipped:
        shown = "; ".join(skipped[:5]) + (
            f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        warnings.warn(f"skipped {len(skipped)} unreadable images: {shown}", stacklevel=3)
    if len(refs) < n:
        warnings.warn(f"only {len(refs)} of {n} requested samples could be loaded", stacklevel=3)
    if not refs:
        raise DataError("no sample could be loaded (every selected image was unreadable)")
    return LazyPairs(refs) if lazy else kept


@overload
def sample_pairs(
    images: Sequence[ImageLike],
    texts: Sequence[TextLike],
    n: int | None = ...,
    seed: int = ...,
    *,
    strict: bool = ...,
    lazy: Literal[False] = ...,
    verified: set[str] | None = ...,
) -> list[Pair]: ...
@overload
def sample_pairs(
    images: Sequence[ImageLike],
    texts: Sequence[TextLike],
    n: int | None = ...,
    seed: int = ...,
    *,
    strict: bool = ...,
    lazy: Literal[True],
    verified: set[str] | None = ...,
) -> LazyPairs: ...
def sample_pairs(
    images: Sequence[ImageLike],
    texts: Sequence[TextLike],
    n: int | None = 100,
    seed: int = 0,
    *,
    strict: bool = False,
    lazy: bool = False,
    verified: set[str] | None = None,
) -> list[Pair] | LazyPairs:
    """Pick N images and N passages independently at random (seeded, no replacement) and pair them.

    Relevance between image and text is not required. The images and the passages are drawn from
    separate seeded streams, so the first k pairs for a seed are the same whatever N >= k is.
    `lazy=True` returns a sequence that decodes each image on access (memory independent of N);
    pass the same `verified` set to repeated lazy calls to decode each image only once to check it.
    """
    if not images:
        raise DataError("no images to sample from")
    if not texts:
        raise DataError("no text passages to sample from")
    n = _check_n(n, min(len(images), len(texts)), "image/text pairs", strict)
    text_order = seeded_order(len(texts), seed, "texts")
    chosen = [_as_text(texts[i], i) for i, _ in zip(text_order, range(n), strict=False)]

    def make_ref(i: int, slot: int) -> PairRef:
        image_id, loader = images[i]
        return PairRef(ImageItem(image_id, loader), chosen[slot])

    order = seeded_order(len(images), seed, "images")
    return _draw(order, make_ref, n, strict, lazy, verified)


def sample_refs(
    refs: Sequence[PairRef],
    n: int | None = 100,
    seed: int = 0,
    *,
    strict: bool = False,
    lazy: bool = False,
    verified: set[str] | None = None,
) -> list[Pair] | LazyPairs:
    """Pick N pairs that belong together (pairs file, HF dataset) at random, seeded, no replacement."""
    if not refs:
        raise DataError("no pairs to sample from")
    n = _check_n(n, len(refs), "pairs", strict)
    order = seeded_order(len(refs), seed, "pairs")
    return _draw(order, lambda i, _slot: refs[i], n, strict, lazy, verified)
