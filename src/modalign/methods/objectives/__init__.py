"""Training objectives: the interface every method's objective implements (`Objective`, named loss
terms from one forward pass), the `OBJECTIVES` registry behind `--objective NAME`, `mfid`
(the MIR repository's gap loss) and the symmetric InfoNCE with negatives gathered across processes
that SEA, the contrastive objective and the lab's CLIP share. The methods' own objectives live with their method (SEA,
contrastive, VLSA's reconstruction); importing `modalign.methods` registers them all."""

from modalign.methods.objectives import modality_gap  # noqa: F401  (registers mfid)
from modalign.methods.objectives.base import OBJECTIVES, ForwardContext, Objective, ObjectiveSpec
from modalign.methods.objectives.infonce import (
    InfoNCE,
    gather_rows,
    infonce_from_logits,
    symmetric_infonce,
)

__all__ = [
    "OBJECTIVES",
    "ForwardContext",
    "InfoNCE",
    "Objective",
    "ObjectiveSpec",
    "gather_rows",
    "infonce_from_logits",
    "symmetric_infonce",
]
