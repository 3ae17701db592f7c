"""The joint contrastive + next-token objective (Ak et al.): CLIP-style InfoNCE between image and
text embeddings read from the LLM's last hidden state."""

from modalign.methods.contrastive.objective import JointContrastiveObjective

__all__ = [
    "JointContrastiveObjective",
]
