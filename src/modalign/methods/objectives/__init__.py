"""Training objectives (one file each), registered in OBJECTIVES by name for `--objective NAME`."""

from modalign.methods.objectives import (  # noqa: F401  (register)
    contrastive,
    modality_gap,
    reconstruction,
    sea,
)
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective, ObjectiveSpec

__all__ = ["OBJECTIVES", "ForwardContext", "Objective", "ObjectiveSpec"]
