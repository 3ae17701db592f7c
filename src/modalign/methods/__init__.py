"""Alignment methods as small, pure `nn.Module`s and losses (connectors, MoCa, objectives, LoRA).

Nothing here knows about checkpoints or families; `modalign.models` wires methods into models.
"""

from modalign.methods import connectors

__all__ = ["connectors"]
