"""A stage's cognition turns (VLSA Target_PX / Target_VQ): settings and the dataset wrapper.

spec = CognitionSpec(kinds=("pixel", "vq"), probability=0.3, vq_model="runs/vq")
data = cognition_dataset(ConversationDataset(convs), spec, tokenizer, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from modalign.errors import ConfigError
from modalign.methods.vlsa.cognition import KINDS, CognitionTargets, check_grid, check_kinds
from modalign.settings import option

__all__ = ["CognitionSpec", "cognition_dataset"]


@dataclass(frozen=True)
class CognitionSpec:
    """Which targets, how often (per sample), the pixel grid G, and the VQ model (a diffusers
    VQModel folder) with the image size it encodes (None: its config's sample_size)."""

    kinds: tuple[str, ...] = option(
        KINDS, help="insert pixel and/or VQ question-answer turns: pixel, vq or pixel,vq",
        flag="--cognition", sep=",", metavar="KINDS", enables=True,
    )  # fmt: skip
    probability: float = option(0.3, help="probability that a sample gets one such turn",
                                flag="--cognition-p")  # fmt: skip
    grid: int = option(8, help="pixel target grid G: the (G/2)^2 colours of a quarter",
                       flag="--cognition-grid")  # fmt: skip
    vq_model: str | None = option(None, help="a diffusers VQModel folder for 'vq' turns",
                                  flag="--vq-model", metavar="FOLDER")  # fmt: skip
    vq_size: int | None = option(None, help="image size the VQ model encodes (default: its own)",
                                 flag="--vq-size")  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", check_kinds(self.kinds))
        check_grid(self.grid)
        if "vq" in self.kinds and not self.vq_model:
            raise ConfigError("cognition target 'vq' needs a VQ model (--vq-model FOLDER)")
        if not 0.0 < self.probability <= 1.0:
            raise ConfigError(f"cognition probability must be in (0, 1], got {self.probability}")


def cognition_dataset(base: Dataset, spec: CognitionSpec, tokenizer: Any, seed: int) -> Dataset:
    """`base` with cognition turns inserted as `spec` says; the VQ model is loaded and checked
    against the tokenizer (every code index must be writable as text)."""
    reader = None
    if "vq" in spec.kinds:
        from diffusers import VQModel

        from modalign.methods.vlsa.vq_targets import VQCodeReader, check_codes_fit, codebook

        model = VQModel.from_pretrained(spec.vq_model)
        check_codes_fit(tokenizer, codebook(model).shape[0])
        reader = VQCodeReader(model, spec.vq_size or int(model.config.sample_size))
    return CognitionTargets(
        base, probability=spec.probability, kinds=spec.kinds, grid=spec.grid,
        vq_codes=reader, seed=seed,
    )  # fmt: skip
