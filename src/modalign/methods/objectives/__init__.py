"""Training objectives: the interface every method's objective implements (`Objective`, named loss
terms from one forward pass), the `OBJECTIVES` registry behind `--objective NAME`, and `mfid`
(the MIR repository's gap loss). The methods' own objectives live with their method (SEA,
contrastive, VLSA's reconstruction); importing `modalign.methods` registers them all."""

from modalign.methods.objectives import modality_gap  # noqa: F401  (registers mfid)
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective, ObjectiveSpec

__all__ = ["OBJECTIVES", "ForwardContext", "Objective", "ObjectiveSpec"]
