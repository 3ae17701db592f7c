"""Unlock strategies per component (TinyLLaVA-style tune types, plus the MIR repo's partial
unlocks) and optimizer parameter groups with a learning rate per component.

    spec = UnlockSpec(llm="first:16", vision="from:12", connector="full")
    report = apply_unlock(model, spec)          # sets requires_grad on every parameter
    groups = param_groups(model, {"connector": 1e-3, "vision": 2e-6}, default_lr=2e-5,
                          weight_decay=0.0)
    optimizer = torch.optim.AdamW(groups)
    ...train...
    finish_stage(model, spec)                   # merges LoRA when spec says so

Tune types (CLI strings):
- llm: frozen | full | lora | first:N
    full    = every decoder layer + embed_tokens + final norm + lm_head (official `-1`);
    first:N = decoder layers 0..N-1 (exactly N) + embed_tokens; norm and lm_head stay frozen.
              `off_by_one_compat` reproduces the official `--tune_llm_utill_layer N`: layers
              0..N (N + 1 layers), and norm + lm_head as well when N equals the layer count;
    lora    = LoRA adapters on the decoder's linears (base frozen), merged after the stage or
              kept, per `UnlockSpec.lora`.
- vision: frozen | full | from:N
    from:N  = encoder layers N.. plus the modules after them (post_layernorm), as the official
              `--tune_vit_from_layer N`; embeddings and earlier layers stay frozen.
- connector: frozen | full
- moca: MoCa's parameters (`model.moca`) trainable or frozen.
Existing LoRA adapters (a kept adapter from an earlier stage) follow the component they sit in:
trainable under llm=full, in the unlocked layers under first:N, frozen under llm=frozen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from modalign.errors import ConfigError
from modalign.methods.lora import (
    LoraSpec,
    has_lora,
    inject_lora,
    lora_layers,
    lora_state,
    lora_target_names,
    merge_lora,
)
from modalign.models.parts import COMPONENTS, ModelParts, model_parts
from modalign.registry import Registry
from modalign.settings import from_mapping, option, parse_spec

__all__ = [
    "CONNECTOR_TUNES",
    "LLM_TUNES",
    "VISION_TUNES",
    "Tune",
    "UnlockReport",
    "UnlockSpec",
    "apply_unlock",
    "decay_exempt",
    "finish_stage",
    "param_groups",
]

# Tune type -> whether it takes a layer number (`first:N`, `from:N`).
LLM_TUNES: Registry[bool] = Registry("llm tune type")
VISION_TUNES: Registry[bool] = Registry("vision tune type")
CONNECTOR_TUNES: Registry[bool] = Registry("connector tune type")
LLM_TUNES.register("frozen", "full", "lora")(False)
LLM_TUNES.register("first")(True)
VISION_TUNES.register("frozen", "full")(False)
VISION_TUNES.register("from")(True)
CONNECTOR_TUNES.register("frozen", "full")(False)

_TUNES = {"llm": LLM_TUNES, "vision": VISION_TUNES, "connector": CONNECTOR_TUNES}


def _choices(component: str) -> str:
    reg = _TUNES[component]
    return ", ".join(f"{k}:N" if reg[k] else k for k in reg.names())


@dataclass(frozen=True)
class Tune:
    """A parsed tune type: `kind` ("first") and its layer number (16), or None."""

    kind: str
    n: int | None = None

    @classmethod
    def parse(cls, component: str, value: str) -> Tune:
        """Parse "full" / "first:16" / "from:12" for `component` (the spec grammar of
        `modalign.settings.parse_spec`); bad strings are a ConfigError listing the choices."""
        if not isinstance(value, str):
            raise ConfigError(f"{component} tune type must be a string, got {value!r}")
        parts = parse_spec(value.strip().lower(), f"{component} tune type")
        reg = _TUNES[component]
        if parts.name not in reg or parts.options:
            raise ConfigError(
                f"unknown {component} tune type {value!r}; choose one of: {_choices(component)}"
            )
        if not reg[parts.name]:
            if parts.arg is not None:
                raise ConfigError(
                    f"{component} tune type {parts.name!r} takes no layer number: {value!r}"
                )
            return cls(parts.name)
        if parts.arg is None or not re.fullmatch(r"[+-]?\d+", parts.arg):
            raise ConfigError(
                f"{component} tune type {value!r} needs an integer layer number, as {parts.name}:N"
            )
        return cls(parts.name, int(parts.arg))

    def __str__(self) -> str:
        return self.kind if self.n is None else f"{self.kind}:{self.n}"


@dataclass(frozen=True)
class UnlockSpec:
    """What is trainable in a stage, per component. The default is LLaVA's pre-training
    (connector only). Strings are normalised and checked here; layer numbers are checked against
    the model in `apply_unlock`."""

    llm: str = option("frozen", help="what of the LLM trains: frozen | full | lora | first:N",
                      metavar="TUNE")  # fmt: skip
    vision: str = option("frozen", help="what of the vision tower trains: frozen | full | from:N",
                         metavar="TUNE")  # fmt: skip
    connector: str = option("full", help="whether the connector trains: frozen | full",
                            flag="--connector-tune", metavar="TUNE")  # fmt: skip
    moca: bool = option(False, cli=False,
                        help="MoCa's parameters train (a model that carries MoCa trains it in "
                        "every stage: `modalign.train.recipe`)")  # fmt: skip
    off_by_one_compat: bool = option(False,
                                     help="first:N unlocks layers 0..N like the official "
                                     "--tune_llm_utill_layer")  # fmt: skip
    lora: LoraSpec = option(default_factory=LoraSpec, help="LoRA settings", prefix="lora-")

    def __post_init__(self) -> None:
        for comp in ("llm", "vision", "connector"):
            object.__setattr__(self, comp, str(Tune.parse(comp, getattr(self, comp))))
        for flag in ("moca", "off_by_one_compat"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if not isinstance(self.lora, LoraSpec):
            raise ConfigError(f"lora must be a LoraSpec, got {type(self.lora).__name__}")
        if self.off_by_one_compat and self.llm_tune.kind != "first":
            raise ConfigError("off_by_one_compat applies only to llm=first:N")
        # Bounds that hold for any model; the upper ones are checked against it in apply_unlock.
        if self.llm_tune.kind == "first" and int(self.llm_tune.n or 0) < 1:
            raise ConfigError(f"llm={self.llm}: N must be >= 1 (the number of decoder layers)")
        if self.vision_tune.kind == "from" and int(self.vision_tune.n or 0) < 0:
            raise ConfigError(f"vision={self.vision}: N must be >= 0 (the first layer to train)")

    @property
    def llm_tune(self) -> Tune:
        return Tune.parse("llm", self.llm)

    @property
    def vision_tune(self) -> Tune:
        return Tune.parse("vision", self.vision)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the run's JSON)."""
        return {
            "llm": self.llm,
            "vision": self.vision,
            "connector": self.connector,
            "moca": self.moca,
            "off_by_one_compat": self.off_by_one_compat,
            "lora": self.lora.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnlockSpec:
        """Inverse of `to_dict`; unknown keys are a ConfigError."""
        return from_mapping(cls, data, "unlock")


@dataclass(frozen=True)
class UnlockReport:
    """What `apply_unlock` set: parameter counts per component (trainable / total), the exact
    decoder and vision layers holding trainable parameters, and notes for the log."""

    spec: UnlockSpec
    trainable: dict[str, int]
    total: dict[str, int]
    llm_layers: tuple[int, ...]
    llm_layer_count: int
    vision_layers: tuple[int, ...]
    vision_layer_count: int
    llm_parts: tuple[str, ...]  # which of embed_tokens / final_norm / lm_head are trainable
    vision_post: bool  # whether the post-layer modules (post_layernorm...) are trainable
    lora_targets: tuple[str, ...]
    lora_injected: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the run's JSON)."""
        return {
            "spec": self.spec.to_dict(),
            "trainable": dict(self.trainable),
            "total": dict(self.total),
            "llm_layers": list(self.llm_layers),
            "llm_layer_count": self.llm_layer_count,
            "vision_layers": list(self.vision_layers),
            "vision_layer_count": self.vision_layer_count,
            "llm_parts": list(self.llm_parts),
            "vision_post": self.vision_post,
            "lora_targets": list(self.lora_targets),
            "lora_injected": self.lora_injected,
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """A few log lines: per component what is trainable and how many parameters."""
        lines = [
            f"llm ({self.spec.llm}): decoder layers {_ranges(self.llm_layers)} "
            f"({len(self.llm_layers)} of {self.llm_layer_count})"
            + (f" + {', '.join(self.llm_parts)}" if self.llm_parts else ""),
            f"vision ({self.spec.vision}): encoder layers {_ranges(self.vision_layers)} "
            f"({len(self.vision_layers)} of {self.vision_layer_count})"
            + (" + post-layer modules" if self.vision_post else ""),
        ]
        if self.lora_targets:
            lines.append(f"lora: {len(self.lora_targets)} adapted linear layers")
        counts = ", ".join(
            f"{c} {self.trainable[c]:,}/{self.total[c]:,}" for c in COMPONENTS if self.total[c]
        )
        lines.append(f"trainable parameters: {counts}")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _ranges(indices: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0-2, 5"; () -> "none"."""
    if not indices:
        return "none"
    out, start, prev = [], indices[0], indices[0]
    for i in (*indices[1:], None):
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)


def _numel(p: nn.Parameter) -> int:
    """Element count, also under DeepSpeed ZeRO-3 (where p.numel() is 0 on a partition)."""
    return int(getattr(p, "ds_numel", p.numel()))


def _prepare_lora(model: nn.Module, spec: UnlockSpec, parts: ModelParts) -> bool:
    """For llm=lora: inject adapters, or check that those already attached match the spec.
    Returns whether adapters were injected now."""
    decoder = str(parts.paths["decoder"])
    if not has_lora(model):
        inject_lora(model, spec.lora, within=decoder)
        return True
    state = lora_state(model) or {}
    want = set(lora_target_names(model, decoder, spec.lora.targets))
    got = set(lora_layers(model))
    same = (state.get("r"), state.get("alpha")) == (spec.lora.r, float(spec.lora.alpha))
    if not same or want != got:
        raise ConfigError(
            f"the model already has LoRA adapters (r={state.get('r')}, alpha={state.get('alpha')},"
            f" {len(got)} layers) that differ from the requested LoRA (r={spec.lora.r}, "
            f"alpha={spec.lora.alpha}, {len(want)} layers); merge them first or ask for the same"
        )
    return False


class _Plan:
    """Per-parameter-name decision of one spec on one model (pure: reads names only)."""

    def __init__(self, spec: UnlockSpec, parts: ModelParts) -> None:
        self.spec, self.parts = spec, parts
        self.n_llm = len(parts.decoder_layers)
        self.n_vis = len(parts.vision_layers)
        llm, vis = spec.llm_tune, spec.vision_tune
        self.llm_kind, self.vis_kind = llm.kind, vis.kind
        self.llm_upto = self.n_llm  # decoder layers [0, llm_upto) unlocked under first:N
        self.llm_ends = llm.kind == "full"  # final norm + lm_head unlocked
        if llm.kind == "first":
            n = int(llm.n)  # type: ignore[arg-type]
            if not 1 <= n <= self.n_llm:
                raise ConfigError(
                    f"llm=first:{n}: the decoder has {self.n_llm} layers; N must be between 1 "
                    f"and {self.n_llm}"
                )
            if spec.off_by_one_compat:  # official `layer_id <= N`; N == count unlocks the ends
                self.llm_upto = min(n + 1, self.n_llm)
                self.llm_ends = n == self.n_llm
            else:
                self.llm_upto = n
        self.vis_from = 0
        if vis.kind == "from":
            n = int(vis.n)  # type: ignore[arg-type]
            if not 0 <= n < self.n_vis:
                raise ConfigError(
                    f"vision=from:{n}: the vision tower has {self.n_vis} layers; N must be between"
                    f" 0 and {self.n_vis - 1}"
                )
            self.vis_from = n

    def llm_wants(self, name: str, adapter: bool) -> bool:
        """Decision for a parameter in the LLM (base weight or, if `adapter`, a LoRA adapter)."""
        kind, parts = self.llm_kind, self.parts
        if kind == "frozen":
            return False
        if kind == "full":
            return True
        if kind == "lora":
            return adapter
        idx = parts.decoder_layer_of(name)  # first:N
        if idx is not None:
            return idx < self.llm_upto
        if parts.in_part(name, "embed_tokens"):
            return True
        if parts.in_part(name, "final_norm") or parts.in_part(name, "lm_head"):
            return self.llm_ends
        return False

    def vision_wants(self, name: str) -> bool:
        if self.vis_kind == "frozen":
            return False
        if self.vis_kind == "full":
            return True
        idx = self.parts.vision_layer_of(name)
        if idx is not None:
            return idx >= self.vis_from
        return self.parts.in_vision_post(name)

    def wants(self, name: str) -> bool:
        """Whether the parameter called `name` should be trainable."""
        comp = self.parts.component_of(name)
        host = self.parts.host_component(name) if comp == "lora" else comp
        if host == "llm":
            return self.llm_wants(name, adapter=comp == "lora")
        if host == "vision":
            return self.vision_wants(name)
        if host == "connector":
            return self.spec.connector == "full"
        if host == "moca":
            return self.spec.moca
        return False


def apply_unlock(model: nn.Module, spec: UnlockSpec) -> UnlockReport:
    """Set requires_grad on every parameter of `model` as `spec` says (everything not unlocked
    is frozen); for llm=lora inject the adapters first. Returns what was set."""
    parts = model_parts(model)
    if spec.moca and parts.moca is None:
        raise ConfigError("moca=true, but the model has no MoCa attached (model.moca)")
    plan = _Plan(spec, parts)  # validates layer numbers before anything changes
    injected = _prepare_lora(model, spec, parts) if spec.llm == "lora" else False
    parts = model_parts(model)  # LoRA wrappers replace modules
    plan = _Plan(spec, parts)

    # A tied parameter (lm_head = embed_tokens) has several names: trainable if any name wants it.
    names_of: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
        params[id(p)] = p
    notes: list[str] = []
    for key, p in params.items():
        decisions = {n: plan.wants(n) for n in names_of[key]}
        p.requires_grad_(any(decisions.values()))
        if len(set(decisions.values())) > 1:
            on = [n for n, d in decisions.items() if d]
            off = [n for n, d in decisions.items() if not d]
            notes.append(
                f"{', '.join(off)} is tied to {', '.join(on)} (one tensor), so it is trained too"
            )
    if spec.off_by_one_compat:
        notes.append(
            f"off_by_one_compat: official --tune_llm_utill_layer {spec.llm_tune.n} semantics "
            f"(layers 0..{plan.llm_upto - 1}, {plan.llm_upto} layers)"
        )
    return _report(model, spec, parts, injected, tuple(notes))


def _report(
    model: nn.Module, spec: UnlockSpec, parts: ModelParts, injected: bool, notes: tuple[str, ...]
) -> UnlockReport:
    trainable = dict.fromkeys(COMPONENTS, 0)
    total = dict.fromkeys(COMPONENTS, 0)
    llm_layers: set[int] = set()
    vis_layers: set[int] = set()
    llm_parts: set[str] = set()
    vision_post = False
    for name, p in model.named_parameters():
        comp = parts.component_of(name)
        total[comp] += _numel(p)
        if not p.requires_grad:
            continue
        trainable[comp] += _numel(p)
        if (i := parts.decoder_layer_of(name)) is not None:
            llm_layers.add(i)
        if (i := parts.vision_layer_of(name)) is not None:
            vis_layers.add(i)
        vision_post = vision_post or parts.in_vision_post(name)
        for part in ("embed_tokens", "final_norm", "lm_head"):
            if parts.in_part(name, part):
                llm_parts.add(part)
    # A tied lm_head has no name of its own in named_parameters(): report it with its tensor.
    head_w = getattr(parts.lm_head, "weight", None)
    if head_w is not None and head_w.requires_grad:
        llm_parts.add("lm_head")
    return UnlockReport(
        spec=spec,
        trainable=trainable,
        total=total,
        llm_layers=tuple(sorted(llm_layers)),
        llm_layer_count=len(parts.decoder_layers),
        vision_layers=tuple(sorted(vis_layers)),
        vision_layer_count=len(parts.vision_layers),
        llm_parts=tuple(p for p in ("embed_tokens", "final_norm", "lm_head") if p in llm_parts),
        vision_post=vision_post,
        lora_targets=tuple(sorted(lora_layers(model))),
        lora_injected=injected,
        notes=notes,
    )


def finish_stage(model: nn.Module, spec: UnlockSpec) -> list[str]:
    """End of a stage: merge the LoRA adapters into the base weights when the spec asks for it
    (llm=lora with lora.merge); returns the merged modules' names (empty otherwise)."""
    if spec.llm == "lora" and spec.lora.merge:
        return merge_lora(model)
    return []


# HF Trainer's no-decay name patterns (transformers' `Trainer.get_decay_parameter_names`).
_NO_DECAY_PATTERNS = tuple(
    re.compile(p)
    for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
)


def _is_norm(module: nn.Module) -> bool:
    """Normalisation layers of any family (LayerNorm, GroupNorm, BatchNorm, *RMSNorm ...)."""
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    return isinstance(module, norm_types) or type(module).__name__.endswith("Norm")


def decay_exempt(model: nn.Module, parts: ModelParts | None = None) -> set[str]:
    """Names of the parameters that get no weight decay: biases and normalisation weights (HF
    Trainer's name patterns, plus any module whose class is a norm, e.g. Qwen's `ln_q` RMSNorm)
    and MoCa's scale/shift."""
    parts = parts or model_parts(model)
    out = set()
    for name, _ in model.named_parameters():
        owner = name.rpartition(".")[0]
        module = model.get_submodule(owner) if owner else model
        if (
            any(pat.search(name.lower()) for pat in _NO_DECAY_PATTERNS)
            or _is_norm(module)
            or parts.component_of(name) == "moca"
        ):
            out.add(name)
    return out


def _check_rate(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{what} must be >= 0, got {value!r}")
    return float(value)


def param_groups(
    model: nn.Module,
    lrs: Mapping[str, float] | None,
    default_lr: float,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups of the trainable parameters: one learning rate per component
    (`lrs`, e.g. {"connector": 1e-3, "vision": 2e-6}; others get `default_lr`), split into decayed
    and no-decay groups (see `decay_exempt`). Each group has a "name" ("connector",
    "connector/no_decay", ...) for logging; empty groups are left out."""
    lrs = dict(lrs or {})
    unknown = sorted(set(lrs) - set(COMPONENTS))
    if unknown:
        raise ConfigError(
            f"unknown component(s) in learning rates: {', '.join(unknown)}; "
            f"choose from: {', '.join(COMPONENTS)}"
        )
    rates = {c: _check_rate(f"learning rate of {c}", lrs.get(c, default_lr)) for c in COMPONENTS}
    decay = _check_rate("weight_decay", weight_decay)
    parts = model_parts(model)
    exempt = decay_exempt(model, parts)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (parts.component_of(name), name not in exempt)
            buckets.setdefault(key, []).append(p)
    if not buckets:
        raise ConfigError("nothing to train: every parameter of the model is frozen")
    groups = []
    for comp in COMPONENTS:
        for decayed in (True, False):
            if (comp, decayed) in buckets:
                groups.append(
                    {
                        "name": comp if decayed else f"{comp}/no_decay",
                        "params": buckets[comp, decayed],
                        "lr": rates[comp],
                        "weight_decay": decay if decayed else 0.0,
                    }
                )
    return groups
