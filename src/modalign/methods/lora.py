"""LoRA on a model's linear layers with peft, in place: the model keeps its own class (no
`PeftModel` wrapper), so `save_pretrained`, `from_pretrained` hooks and `transformers.Trainer`
see the same model as before.

    spec = LoraSpec()                                   # r=64, alpha=16, dropout 0.05 (MIR repo)
    names = inject_lora(model, spec, within="model.language_model")
    ...train...
    merge_lora(model)                                   # W <- W + (alpha/r) B A; LoRA layers gone

peft's layer: W' = W + (alpha / r) * B A, A Kaiming-uniform, B = 0, so the output is unchanged at
injection. peft renames a wrapped layer's weight `q_proj.weight` -> `q_proj.base_layer.weight`:
a checkpoint saved with unmerged LoRA must be re-injected (`attach_lora(model, lora_state(...))`)
before its weights are loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from modalign.errors import ConfigError, ModelError
from modalign.methods.extension_record import forget_extension, record_extension
from modalign.settings import from_mapping, option

__all__ = [
    "ADAPTER",
    "EXTENSION",
    "LoraSpec",
    "attach_lora",
    "has_lora",
    "inject_lora",
    "is_lora_param",
    "lora_layers",
    "lora_settings",
    "lora_state",
    "lora_target_names",
    "merge_lora",
]

# The one peft adapter name we use; a model carries at most one LoRA adapter.
ADAPTER = "default"
# Name of the record in `config.modalign_extensions` (see modalign.models.surgery.extensions).
EXTENSION = "lora"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA hyper-parameters (defaults: the official MIR repo's `train.py`) and what to do after
    the stage: `merge=True` folds the adapters into the base weights ("LoRA w/ merge"),
    `merge=False` keeps them as separate modules that save with the checkpoint ("w/o merge").

    `targets`: None = every nn.Linear of the scope given to `inject_lora` (LLaVA's
    `find_all_linear_names`); else module-name suffixes such as ("q_proj", "v_proj") or
    ("self_attn.o_proj",), matched at a dot boundary.
    """

    r: int = option(64, help="LoRA rank")
    alpha: float = option(16.0, help="LoRA alpha (scale alpha / r)")
    dropout: float = option(0.05, help="LoRA dropout")
    targets: tuple[str, ...] | None = option(
        None, help="module-name suffixes to adapt, comma-separated (default: every LLM linear)",
        sep=",", metavar="NAMES",
    )  # fmt: skip
    merge: bool = option(
        True, help="keep LoRA unmerged after the stage (saved as adapters; default: merge)",
        flag="--lora-keep", negate=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not isinstance(self.alpha, int | float) or not math.isfinite(self.alpha):
            raise ConfigError(f"LoRA alpha must be a finite number, got {self.alpha!r}")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.targets is not None:
            if isinstance(self.targets, str):  # a bare string would be split into characters
                object.__setattr__(self, "targets", (self.targets,))
            targets = tuple(self.targets)
            bad = [t for t in targets if not isinstance(t, str) or not t.strip(". ")]
            if not targets or bad:
                raise ConfigError(
                    "LoRA targets must be a non-empty list of module-name suffixes "
                    f"(e.g. q_proj, v_proj), got {self.targets!r}"
                )
            object.__setattr__(self, "targets", targets)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the run's JSON)."""
        out = asdict(self)
        out["targets"] = None if self.targets is None else list(self.targets)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraSpec:
        """Inverse of `to_dict`; unknown keys are a ConfigError."""
        return from_mapping(cls, data, "LoRA")


def is_lora_param(name: str) -> bool:
    """True for a LoRA adapter parameter name (`...q_proj.lora_A.default.weight`), False for the
    wrapped base weight (`...q_proj.base_layer.weight`) and everything else."""
    from peft.tuners.lora import LoraLayer

    return any(part in LoraLayer.adapter_layer_names for part in name.split("."))


def _matches(name: str, suffix: str) -> bool:
    """`name` ends with the dotted suffix at a module boundary (`q_proj` matches `a.q_proj`)."""
    suffix = suffix.strip(".")
    return name == suffix or name.endswith("." + suffix)


def _linear_names(scope: nn.Module, prefix: str) -> list[str]:
    """Qualified names of the linear layers under `scope`: plain nn.Linear modules and LoRA
    wrappers of one (counted as the layer they wrap; their inner linears are skipped)."""
    from peft.tuners.lora import LoraLayer

    out: list[str] = []
    wrappers: list[str] = []
    for name, mod in scope.named_modules():
        if any(name.startswith(w + ".") for w in wrappers):
            continue  # base_layer / lora_A / lora_B of a wrapper
        if isinstance(mod, LoraLayer):
            wrappers.append(name)
            if isinstance(mod.get_base_layer(), nn.Linear):
                out.append(prefix + name)
        elif isinstance(mod, nn.Linear):
            out.append(prefix + name)
    return out


def lora_target_names(
    model: nn.Module, within: str, targets: Sequence[str] | None = None
) -> list[str]:
    """Qualified names of the nn.Linear modules under `within` that LoRA wraps: all of them
    (targets None) or those ending with one of the `targets` suffixes. A suffix that matches no
    nn.Linear under `within` is a ConfigError naming it. Layers already wrapped count as the
    linear they wrap, so the answer is the same before and after `inject_lora`."""
    try:
        scope = model.get_submodule(within) if within else model
    except AttributeError:
        raise ModelError(f"no submodule {within!r} to put LoRA on") from None
    linears = _linear_names(scope, f"{within}." if within else "")
    if targets is None:
        if not linears:
            raise ModelError(f"no nn.Linear layers under {within or 'the model'!r} for LoRA")
        return linears
    unmatched = [t for t in targets if not any(_matches(n, t) for n in linears)]
    if unmatched:
        examples = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ConfigError(
            f"LoRA target(s) {', '.join(map(repr, unmatched))} match no nn.Linear under "
            f"{within or 'the model'!r}; its linear layers are named: {', '.join(examples)}"
        )
    return [n for n in linears if any(_matches(n, t) for t in targets)]


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> peft LoRA layer, for every LoRA-wrapped module in `model`."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def has_lora(model: nn.Module) -> bool:
    """Whether any LoRA layer is attached."""
    return bool(lora_layers(model))


def _inject(model: nn.Module, names: Sequence[str], r: int, alpha: float, dropout: float) -> None:
    """peft injection of adapter `ADAPTER` on exactly the modules `names` (qualified)."""
    from peft import LoraConfig, inject_adapter_in_model

    # Anchored full-name regex: peft matches it with re.fullmatch against each module's name,
    # so only these modules are wrapped (a plain suffix list could also hit look-alikes).
    pattern = "|".join(f"(?:{re.escape(n)})" for n in names)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none"
    )
    requires = {id(p): p.requires_grad for p in model.parameters()}
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    # peft freezes every non-adapter parameter of the model; restore them (callers that want a
    # frozen base, such as train.unlock, set requires_grad themselves).
    for p in model.parameters():
        if id(p) in requires:
            p.requires_grad_(requires[id(p)])
    wrapped = lora_layers(model)
    if set(wrapped) != set(names):  # invariant: peft wrapped exactly what we asked for
        raise RuntimeError(f"peft wrapped {sorted(set(wrapped) ^ set(names))} unexpectedly")
    # Adapters of a half-precision base are kept in float32, as peft's get_peft_model does
    # (autocast_adapter_dtype): B A updates of ~1e-5 vanish in bf16. peft casts the input to the
    # adapter's dtype and the result back, and merges in float32.
    for layer in wrapped.values():
        for p in layer.parameters():
            if p.dtype in (torch.float16, torch.bfloat16) and _is_adapter(layer, p):
                p.data = p.data.float()
    if hasattr(model, "config"):  # so a plain save_pretrained (Trainer) can rebuild it on load
        record_extension(model, EXTENSION, lora_state(model) or {})


def _is_adapter(layer: nn.Module, p: nn.Parameter) -> bool:
    """Whether `p` is one of `layer`'s adapter parameters (not its base layer's)."""
    base = {id(q) for q in layer.get_base_layer().parameters()}
    return id(p) not in base


def inject_lora(model: nn.Module, spec: LoraSpec, within: str) -> list[str]:
    """Wrap the target linears under `within` with trainable LoRA adapters (base weights keep
    their requires_grad); returns the wrapped modules' qualified names. A model that already has
    LoRA is a ModelError: merge it first (`merge_lora`)."""
    if has_lora(model):
        raise ModelError("the model already has LoRA adapters; merge them (merge_lora) first")
    names = lora_target_names(model, within, spec.targets)
    _inject(model, names, spec.r, spec.alpha, spec.dropout)
    return names


def lora_state(model: nn.Module) -> dict[str, Any] | None:
    """What re-creating the attached LoRA layers needs (JSON-ready), or None without LoRA:
    {"r", "alpha", "dropout", "targets": [qualified module names]}."""
    layers = lora_layers(model)
    if not layers:
        return None
    first = next(iter(layers.values()))
    r, alpha = first.r[ADAPTER], first.lora_alpha[ADAPTER]
    drop = first.lora_dropout[ADAPTER]
    dropout = float(drop.p) if isinstance(drop, nn.Dropout) else 0.0
    for name, layer in layers.items():
        if (layer.r[ADAPTER], layer.lora_alpha[ADAPTER]) != (r, alpha):
            raise ModelError(f"LoRA layer {name!r} has a different rank/alpha than the others")
    return {"r": int(r), "alpha": float(alpha), "dropout": dropout, "targets": sorted(layers)}


def attach_lora(model: nn.Module, state: Mapping[str, Any]) -> list[str]:
    """Re-create LoRA layers from `lora_state` output (adapter weights are then loaded from the
    checkpoint: the layers are created with peft's initialisation). Returns the wrapped names."""
    if has_lora(model):
        raise ModelError("the model already has LoRA adapters; cannot attach another set")
    names, r, alpha, dropout = lora_settings(model, state)
    _inject(model, names, r, alpha, dropout)
    return names


def lora_settings(
    model: nn.Module, state: Mapping[str, Any]
) -> tuple[list[str], int, float, float]:
    """(targets, r, alpha, dropout) from `lora_state` output, checked: the numbers are valid and
    every target is an nn.Linear of `model` (ModelError otherwise)."""
    try:
        names = [str(n) for n in state["targets"]]
        r, alpha, dropout = int(state["r"]), float(state["alpha"]), float(state["dropout"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"malformed LoRA state {dict(state)!r}: {exc}") from None
    LoraSpec(r=r, alpha=alpha, dropout=dropout)  # validates the numbers
    missing = [n for n in names if not isinstance(_find(model, n), nn.Linear)]
    if not names or missing:
        raise ModelError(f"LoRA targets not found as nn.Linear in this model: {missing or names}")
    return names, r, alpha, dropout


def _find(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every LoRA adapter into its base weight (W <- W + (alpha/r) B A) and put the plain
    base layer back in place of the LoRA wrapper; returns the merged modules' names (empty if the
    model had no LoRA). The base weights keep their requires_grad."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        layer.merge(safe_merge=True, adapter_names=[ADAPTER])  # raises on NaN/inf
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if layers and hasattr(model, "peft_config"):
        del model.peft_config  # set by peft's injection; stale once the layers are gone
    if hasattr(model, "config"):
        forget_extension(model, EXTENSION)
    return sorted(layers)
