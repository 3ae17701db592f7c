"""Training objectives (one file each), registered in OBJECTIVES by name for `--objective NAME`."""

from modalign.methods.objectives import contrastive, modality_gap, sea  # noqa: F401  (register)
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective, ObjectiveSpec

__all__ = ["OBJECTIVES", "ForwardContext", "Objective", "ObjectiveSpec"]
