"""The named components of an HF vision-language model, the same way for every family:

    parts = model_parts(model)
    parts.decoder_layers[3]                 # a decoder layer (nn.Module)
    parts.paths["connector"]                # "model.multi_modal_projector"
    parameter_components(model)             # {param name: "vision" | "connector" | "llm" | ...}

Components partition the parameters (tied weights counted once, as `named_parameters()` does):
- vision: the vision tower (for Qwen-VL without its merger, which is the connector);
- connector: the projector (and LLaVA-NeXT's learned `image_newline`);
- llm: input embeddings, decoder layers, final norm, lm_head (LoRA base weights included);
- lora: LoRA adapter parameters (peft `lora_A` / `lora_B` ...), wherever they sit;
- moca: MoCa's parameters (`model.moca`, when attached);
- other: anything else (none in the supported families; kept so nothing is silently lost).
Layouts are transformers 5.x attribute paths, one entry per `config.model_type`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import nn

from modalign.errors import ModelError
from modalign.methods.lora import is_lora_param
from modalign.registry import Registry

__all__ = [
    "COMPONENTS",
    "MOCA_ATTR",
    "PART_LAYOUTS",
    "ModelParts",
    "PartLayout",
    "layer_index",
    "model_parts",
    "parameter_components",
]

# Every parameter belongs to exactly one of these (fixed order: reports, parameter groups).
COMPONENTS = ("vision", "connector", "llm", "lora", "moca", "other")

# Where an attached MoCa module lives on the model (`model.moca`).
MOCA_ATTR = "moca"


@dataclass(frozen=True)
class PartLayout:
    """Attribute paths of one family's components (qualified names from the model's root).

    Decoder sub-parts (`embed_tokens`, `layers`, `norm`) are relative to `decoder`.
    `vision_post` and `connector_extra` list optional paths: those present are used.
    """

    vision_tower: str
    vision_layers: str
    connector: str
    decoder: str
    lm_head: str = "lm_head"
    vision_post: tuple[str, ...] = ()
    connector_extra: tuple[str, ...] = ()
    embed_tokens: str = "embed_tokens"
    decoder_layers: str = "layers"
    final_norm: str = "norm"


# model_type -> layout; `model_parts` refuses other families with a ModelError.
PART_LAYOUTS: Registry[PartLayout] = Registry("model family (parts layout)")

_LLAVA = PartLayout(
    vision_tower="model.vision_tower",
    vision_layers="model.vision_tower.encoder.layers",
    vision_post=("model.vision_tower.post_layernorm", "model.vision_tower.head"),
    connector="model.multi_modal_projector",
    connector_extra=("model.image_newline",),
    decoder="model.language_model",
)
PART_LAYOUTS.register(
    "llava", "llava_next", "llava_onevision", "modalign_llava", "paligemma", "gemma3"
)(_LLAVA)
PART_LAYOUTS.register("qwen2_vl", "qwen2_5_vl")(
    PartLayout(
        vision_tower="model.visual",
        vision_layers="model.visual.blocks",
        connector="model.visual.merger",  # inside the vision tower; ModelParts excludes it there
        decoder="model.language_model",
    )
)
PART_LAYOUTS.register("idefics3", "smolvlm")(
    PartLayout(
        vision_tower="model.vision_model",
        vision_layers="model.vision_model.encoder.layers",
        vision_post=("model.vision_model.post_layernorm",),
        connector="model.connector",
        decoder="model.text_model",
    )
)
PART_LAYOUTS.register("internvl")(
    PartLayout(
        vision_tower="model.vision_tower",
        vision_layers="model.vision_tower.encoder.layer",
        vision_post=("model.vision_tower.layernorm",),
        connector="model.multi_modal_projector",
        decoder="model.language_model",
    )
)


def _under(name: str, prefix: str) -> bool:
    """`name` is `prefix` or lies inside it (dot boundary)."""
    return name == prefix or name.startswith(prefix + ".")


def layer_index(name: str, layers_path: str) -> int | None:
    """Index of the layer of `layers_path` (a ModuleList path) holding parameter/module `name`."""
    if not name.startswith(layers_path + "."):
        return None
    head = name[len(layers_path) + 1 :].split(".", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class ModelParts:
    """Resolved components of one model: modules, plus their qualified names in `paths`
    (keys: the field names; `vision_post` and `connector_extra` map to tuples of paths)."""

    family: str
    vision_tower: nn.Module
    vision_layers: nn.ModuleList
    vision_post: tuple[nn.Module, ...]
    connector: nn.Module
    decoder: nn.Module
    embed_tokens: nn.Module
    decoder_layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module
    moca: nn.Module | None
    paths: Mapping[str, str | tuple[str, ...]] = field(repr=False)

    def roots(self) -> dict[str, tuple[str, ...]]:
        """Component -> the paths whose parameters it owns (`lora` is found by name instead)."""
        p = self.paths
        return {
            "vision": (p["vision_tower"],),
            "connector": (p["connector"], *p["connector_extra"]),
            "llm": (p["decoder"], p["lm_head"]),
            "moca": (MOCA_ATTR,) if self.moca is not None else (),
        }

    def host_component(self, name: str) -> str:
        """The component whose module holds parameter `name` (longest owning path: the Qwen-VL
        merger lies inside the vision tower but is the connector); LoRA adapters count as the
        component of the layer they adapt."""
        best, best_len = "other", -1
        for comp, prefixes in self.roots().items():
            for prefix in prefixes:
                if _under(name, prefix) and len(prefix) > best_len:
                    best, best_len = comp, len(prefix)
        return best

    def component_of(self, name: str) -> str:
        """The component owning parameter `name`: "lora" for LoRA adapters, else its host."""
        return "lora" if is_lora_param(name) else self.host_component(name)

    def decoder_layer_of(self, name: str) -> int | None:
        """Decoder layer index holding parameter `name`, or None."""
        return layer_index(name, str(self.paths["decoder_layers"]))

    def vision_layer_of(self, name: str) -> int | None:
        """Vision encoder layer index holding parameter `name`, or None."""
        return layer_index(name, str(self.paths["vision_layers"]))

    def in_vision_post(self, name: str) -> bool:
        """Whether parameter `name` belongs to a module after the vision layers."""
        return any(_under(name, p) for p in self.paths["vision_post"])

    def in_part(self, name: str, part: str) -> bool:
        """Whether parameter `name` lies under the single-path part `part` (e.g. "final_norm")."""
        return _under(name, str(self.paths[part]))


def _get(model: nn.Module, path: str, family: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ModelError(
            f"{family} model has no {what} at {path!r}: its layout differs from the one "
            "modalign knows for this family (transformers 5.x attribute names)"
        ) from None


def _present(model: nn.Module, path: str) -> bool:
    """Whether `path` names a submodule or a parameter of `model`."""
    owner, _, leaf = path.rpartition(".")
    try:
        parent = model.get_submodule(owner) if owner else model
    except AttributeError:
        return False
    return leaf in parent._modules or leaf in parent._parameters


def model_parts(model: nn.Module) -> ModelParts:
    """Resolve the components of `model` from its `config.model_type`; an unsupported family or a
    layout that does not match is a ModelError."""
    family = getattr(getattr(model, "config", None), "model_type", None)
    if family not in PART_LAYOUTS:
        raise ModelError(
            f"cannot split model_type {family!r} into components (vision / connector / LLM); "
            f"supported: {', '.join(PART_LAYOUTS.names())}"
        )
    lay = PART_LAYOUTS[family]
    dec = lay.decoder
    paths: dict[str, str | tuple[str, ...]] = {
        "vision_tower": lay.vision_tower,
        "vision_layers": lay.vision_layers,
        "vision_post": tuple(p for p in lay.vision_post if _present(model, p)),
        "connector": lay.connector,
        "connector_extra": tuple(p for p in lay.connector_extra if _present(model, p)),
        "decoder": dec,
        "embed_tokens": f"{dec}.{lay.embed_tokens}",
        "decoder_layers": f"{dec}.{lay.decoder_layers}",
        "final_norm": f"{dec}.{lay.final_norm}",
        "lm_head": lay.lm_head,
    }
    mods = {
        k: _get(model, v, family, k.replace("_", " "))
        for k, v in paths.items()
        if isinstance(v, str)
    }
    for key in ("vision_layers", "decoder_layers"):
        if not isinstance(mods[key], nn.ModuleList):
            raise ModelError(f"{family}: {paths[key]!r} is not a layer list (nn.ModuleList)")
    moca = getattr(model, MOCA_ATTR, None)
    return ModelParts(
        family=family,
        vision_tower=mods["vision_tower"],
        vision_layers=mods["vision_layers"],  # type: ignore[arg-type]
        vision_post=tuple(model.get_submodule(p) for p in paths["vision_post"]),
        connector=mods["connector"],
        decoder=mods["decoder"],
        embed_tokens=mods["embed_tokens"],
        decoder_layers=mods["decoder_layers"],  # type: ignore[arg-type]
        final_norm=mods["final_norm"],
        lm_head=mods["lm_head"],
        moca=moca if isinstance(moca, nn.Module) else None,
        paths=MappingProxyType(paths),
    )


def parameter_components(model: nn.Module, parts: ModelParts | None = None) -> dict[str, str]:
    """Parameter name -> component (one of COMPONENTS) for every parameter of `model`, each tied
    parameter once under its first name (the `named_parameters()` convention)."""
    parts = parts or model_parts(model)
    return {name: parts.component_of(name) for name, _ in model.named_parameters()}
