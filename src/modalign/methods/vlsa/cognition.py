"""VLSA's cognition targets as extra question-answer turns (docs/methods.md, Cognition turns).

Pixel target (Target_PX): the image on a coarse G x G grid (area average, RGB 0-255); for a
corner (x, y) with 0 <= x, y <= G/2, the (G/2)^2 RGB triplets of the quarter-area region whose
top-left cell is that corner, row-major: "(r, g, b) (r, g, b) ...".
VQ target (Target_VQ): the image's codebook indices (nearest code per latent cell), row-major,
decimal integers separated by spaces: "17 402 ...".
`CognitionTargets` wraps a conversation dataset and, with probability p per sample (seeded by the
sample's index), inserts one such turn at a random turn index. The collators label assistant
replies only, so the inserted answer is learned and its question is not.

    data = CognitionTargets(ConversationDataset(convs), probability=0.3, kinds=("pixel",))
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from modalign.data.conversations import Conversation, Sample
from modalign.errors import ConfigError, DataError

__all__ = [
    "KINDS",
    "PIXEL_QUESTION",
    "VQ_QUESTION",
    "CognitionTargets",
    "check_grid",
    "check_kinds",
    "insert_turn",
    "parse_pixel_answer",
    "parse_vq_answer",
    "pixel_answer",
    "pixel_grid",
    "vq_answer",
]

PIXEL_QUESTION = (
    "List the RGB values, on a {g} x {g} grid, of the quarter of the image whose top-left "
    "corner is at ({x}, {y})."
)
VQ_QUESTION = "Output the visual codebook indices of the image."
KINDS = ("pixel", "vq")
_TRIPLET = re.compile(r"\((\d{1,3}), (\d{1,3}), (\d{1,3})\)")


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """`kinds` as a tuple; ConfigError unless it is a non-empty selection of KINDS."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ConfigError(f"cognition kinds must be some of {', '.join(KINDS)}, got {kinds}")
    return tuple(kinds)


def check_grid(grid: int) -> None:
    """ConfigError unless the pixel-target grid G is even and >= 2 (quarters of whole cells)."""
    if grid < 2 or grid % 2:
        raise ConfigError(f"the pixel-target grid must be even and >= 2, got {grid}")


def pixel_grid(image: Image.Image, grid: int) -> np.ndarray:
    """(G, G, 3) uint8: the image's area average on a G x G grid (PIL's BOX filter)."""
    check_grid(grid)
    return np.asarray(image.convert("RGB").resize((grid, grid), Image.Resampling.BOX))


def pixel_answer(cells: np.ndarray, x: int, y: int) -> str:
    """The (G/2)^2 triplets of `cells` (G, G, 3) from column x, row y, row-major."""
    g = cells.shape[0]
    half = g // 2
    if not (0 <= x <= half and 0 <= y <= half):
        raise ConfigError(f"corner ({x}, {y}) is outside 0..{half} on a {g} x {g} grid")
    region = cells[y : y + half, x : x + half].reshape(-1, 3)  # (half * half, 3)
    return " ".join(f"({r}, {g_}, {b})" for r, g_, b in region.tolist())


def parse_pixel_answer(text: str) -> list[tuple[int, int, int]]:
    """The triplets of a pixel answer (DataError when the text is not one)."""
    triplets = [tuple(int(v) for v in m) for m in _TRIPLET.findall(text)]
    if " ".join(f"({r}, {g}, {b})" for r, g, b in triplets) != text.strip():
        raise DataError(f"not a pixel answer: {text[:60]!r}")
    return triplets  # type: ignore[return-value]


def vq_answer(codes: Sequence[int]) -> str:
    """Codebook indices as decimal text separated by spaces."""
    if len(codes) == 0:
        raise DataError("no VQ codes to write")
    return " ".join(str(int(c)) for c in codes)


def parse_vq_answer(text: str) -> list[int]:
    """The indices of a VQ answer (DataError when the text is not one)."""
    parts = text.split(" ")
    if not parts or not all(p.isdigit() for p in parts):
        raise DataError(f"not a VQ answer: {text[:60]!r}")
    return [int(p) for p in parts]


def insert_turn(conversation: Conversation, turn: tuple[str, str], position: int) -> Conversation:
    """`conversation` with `turn` = (question, answer) inserted before turn `position`."""
    turns = conversation.turns
    if not 0 <= position <= len(turns):
        raise ConfigError(f"turn position {position} outside 0..{len(turns)}")
    return replace(conversation, turns=(*turns[:position], turn, *turns[position:]))


class CognitionTargets(Dataset):
    """A dataset of Samples with cognition turns inserted (probability `probability` each).

    `vq_codes(sample)` gives the image's codebook indices (needed when "vq" is in `kinds`).
    Which samples get a turn, of which kind, at which corner and position depends only on
    (seed, index): the same every epoch and in every worker process.
    """

    def __init__(
        self,
        base: Dataset,
        *,
        probability: float,
        kinds: Sequence[str] = KINDS,
        grid: int = 8,
        vq_codes: Callable[[Sample], Sequence[int]] | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"cognition probability must be in [0, 1], got {probability}")
        kinds = check_kinds(kinds)
        if "vq" in kinds and vq_codes is None:
            raise ConfigError("cognition kind 'vq' needs a VQ model (vq_codes)")
        check_grid(grid)
        missing = [c.id for c in getattr(base, "conversations", ()) if c.image is None]
        if missing:
            raise DataError(
                f"{len(missing)} conversation(s) have no image (first: {missing[0]!r}); "
                "cognition targets describe the image, so every record needs one"
            )
        self.base, self.probability, self.kinds = base, probability, kinds
        self.grid, self.vq_codes, self.seed = grid, vq_codes, seed

    def __len__(self) -> int:
        return len(self.base)

    def turn(self, sample: Sample, kind: str, rng: random.Random) -> tuple[str, str]:
        """The (question, answer) of `kind` for `sample`'s image."""
        if kind == "pixel":
            half = self.grid // 2
            x, y = rng.randint(0, half), rng.randint(0, half)
            question = PIXEL_QUESTION.format(g=self.grid, x=x, y=y)
            return question, pixel_answer(pixel_grid(sample.image, self.grid), x, y)
        return VQ_QUESTION, vq_answer(self.vq_codes(sample))

    def __getitem__(self, index: int) -> Sample:
        sample = self.base[index]
        if sample.image is None:
            raise DataError(f"conversation {sample.conversation.id!r} has no image")
        rng = random.Random(f"cognition:{self.seed}:{index}")
        if rng.random() >= self.probability:
            return sample
        kind = rng.choice(self.kinds)
        turn = self.turn(sample, kind, rng)
        position = rng.randint(0, len(sample.conversation.turns))
        return Sample(insert_turn(sample.conversation, turn, position), sample.image)
