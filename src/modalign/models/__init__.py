"""Models, by job: `adapters` (measure any HF LVLM: per-layer hidden states and modality masks),
`surgery` (connector swap, MoCa / LoRA extensions, assembly from LLaVA parts), `collate` (training
batches), plus loading, saving and the named parts every family shares.

    adapter = load_adapter("llava-hf/llava-1.5-7b-hf")       # or a local path
    model, processor = swap_connector(model, processor, "qformer")
"""

from modalign.data.templates import TEMPLATES, Template
from modalign.models.adapters import (
    ADAPTERS,
    REFUSED,
    LayerStates,
    ModelBatch,
    VLMAdapter,
    adapter_class_for,
    get_adapter,
    load_adapter,
)
from modalign.models.checkpoint import save_model
from modalign.models.collate import (
    IGNORE,
    ChatCollator,
    LlavaCollator,
    PlainCollator,
    collator_class,
)
from modalign.models.loading import load_model, load_processor, parse_dtype
from modalign.models.parts import ModelParts, model_parts, parameter_components
from modalign.models.sequence import pad_sequences
from modalign.models.surgery import (
    MODEL_TYPE,
    assemble_llava,
    register_auto_classes,
    swap_connector,
    vision_token_count,
)

__all__ = [
    "ADAPTERS",
    "IGNORE",
    "MODEL_TYPE",
    "REFUSED",
    "TEMPLATES",
    "ChatCollator",
    "LayerStates",
    "LlavaCollator",
    "ModelBatch",
    "ModelParts",
    "PlainCollator",
    "Template",
    "VLMAdapter",
    "adapter_class_for",
    "assemble_llava",
    "collator_class",
    "get_adapter",
    "load_adapter",
    "load_model",
    "load_processor",
    "model_parts",
    "pad_sequences",
    "parameter_components",
    "parse_dtype",
    "register_auto_classes",
    "save_model",
    "swap_connector",
    "vision_token_count",
]
