"""Model surgery: give a loaded LVLM a new connector (a `modalign_llava` model), attach or detach
the extensions that travel with a checkpoint (MoCa, an unmerged LoRA), and assemble an HF LLaVA
from the parts of an original LLaVA-style pre-training run."""

from modalign.models.surgery.assemble import assemble_llava, parse_projector, read_state_dict
from modalign.models.surgery.connector_llava import (
    MODEL_TYPE,
    ConnectorLlavaConfig,
    ConnectorLlavaForConditionalGeneration,
    connector_processor,
    register_auto_classes,
    swap_connector,
    vision_token_count,
)
from modalign.models.surgery.extensions import (
    EXTENSIONS,
    ModelExtension,
    attach_extensions,
    load_pretrained,
    sync_records,
)

__all__ = [
    "EXTENSIONS",
    "MODEL_TYPE",
    "ConnectorLlavaConfig",
    "ConnectorLlavaForConditionalGeneration",
    "ModelExtension",
    "assemble_llava",
    "attach_extensions",
    "connector_processor",
    "load_pretrained",
    "parse_projector",
    "read_state_dict",
    "register_auto_classes",
    "swap_connector",
    "sync_records",
    "vision_token_count",
]
