"""Training objectives (one file each), registered in OBJECTIVES by name for `--objective NAME`."""

from modalign.methods.objectives import modality_gap  # noqa: F401  (registers "mfid")
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective, ObjectiveSpec

__all__ = ["OBJECTIVES", "ForwardContext", "Objective", "ObjectiveSpec"]
