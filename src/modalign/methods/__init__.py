"""Alignment methods, one home each: connectors, MoCa, LoRA, the objectives' interface and
registry, SEA, the joint contrastive objective, VLSA. `nn.Module`s and their data; nothing here
knows about checkpoints or model families (`modalign.models` wires methods into models).

Importing this package registers every connector and objective, so `ConnectorSpec.parse` and
`ObjectiveSpec.parse` know all names whichever submodule a caller imported first.
"""

from modalign.methods import connectors, contrastive, objectives, sea, vlsa  # registries first
from modalign.methods.connectors import CONNECTORS, ConnectorSpec, build_connector, reset_connector
from modalign.methods.lora import LoraSpec, attach_lora, has_lora, merge_lora
from modalign.methods.moca import MoCa, attach_moca, detach_moca, get_moca
from modalign.methods.objectives import OBJECTIVES, ForwardContext, Objective, ObjectiveSpec

__all__ = [
    "CONNECTORS",
    "OBJECTIVES",
    "ConnectorSpec",
    "ForwardContext",
    "LoraSpec",
    "MoCa",
    "Objective",
    "ObjectiveSpec",
    "attach_lora",
    "attach_moca",
    "build_connector",
    "connectors",
    "contrastive",
    "detach_moca",
    "get_moca",
    "has_lora",
    "merge_lora",
    "objectives",
    "reset_connector",
    "sea",
    "vlsa",
]
