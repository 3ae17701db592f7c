"""A training stage of an LLaVA-style model, end to end: modify -> unlock -> train -> save.

    model, processor = prepare(model, processor, recipe)     # connector swap, MoCa (recipe.py)
    stage = Stage.defaults("pretrain", objectives=(ObjectiveSpec.parse("mfid:0.001"),))
    summary = run_stage(model, processor, conversations, stage, TrainConfig(...), "runs/pt")

`pretrain` defaults to LLaVA's stage 1 (plain template, connector only, lr 1e-3); `sft` to its
stage 2 (chat template, connector + LLM, lr 2e-5). The lab and `modalign train` both call this.
Re-running a finished stage returns its summary; an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json
from modalign.data.conversations import Conversation, ConversationDataset, data_identity
from modalign.errors import ConfigError
from modalign.methods.objectives import Objective, ObjectiveSpec
from modalign.methods.vlsa.cognition_turns import CognitionSpec, cognition_dataset
from modalign.models.collate import collator_class
from modalign.models.identity import model_fingerprint
from modalign.settings import option
from modalign.train.fit import TrainConfig, check_loggers, fit
from modalign.train.trainer import AlignmentTrainer
from modalign.train.unlock import UnlockSpec, apply_unlock, finish_stage


def objective_weights() -> str:
    """'contrastive 1, mfid 0.001, ...': each registered objective's default weight."""
    import inspect

    from modalign.methods.objectives import OBJECTIVES

    weights = {n: inspect.signature(OBJECTIVES[n].__init__).parameters["weight"].default
               for n in OBJECTIVES.names()}  # fmt: skip
    return ", ".join(f"{n} {w:g}" for n, w in weights.items())


LR_COMPONENTS = ("connector", "llm", "vision", "moca", "lora")  # --lr-<component>
SUMMARY = "stage.json"
STARTED = "stage_settings.json"  # written when a stage starts: a resume must match it


@dataclass(frozen=True)
class Stage:
    """What a stage trains and how its batches look (optimisation lives in TrainConfig)."""

    name: str = option(help="pretrain | sft", cli=False)
    template: str = option(help="batch layout: plain (pre-training) | chat", cli=False)
    unlock: UnlockSpec = option(help="what trains, per component", prefix="")
    component_lrs: dict[str, float] = option(
        default_factory=dict, help="learning rate of the {key} (default: --lr)",
        flag="--lr-{key}", keys=LR_COMPONENTS,
    )  # fmt: skip
    objectives: tuple[ObjectiveSpec, ...] = option(
        (), help="add an alignment objective to the LM loss, e.g. mfid:0.001 or "
        f"sea:1,labels=cache/ (default weights: {objective_weights()}; docs/training.md)",
        flag="--objective", metavar="NAME[:W][,K=V]",
    )  # fmt: skip
    max_length: int | None = option(2048, help="truncate longer samples (tokens)")
    plain_end: str = option(
        "\n", help="pre-training caption end: LLaVA's newline or the EOS token",
        choices=("\n", "eos"), aliases={"newline": "\n"}, metavar="{newline,eos}",
    )  # fmt: skip
    cognition: CognitionSpec | None = option(
        None, help="VLSA's inserted pixel / VQ turns (chat stages)", prefix=""
    )

    def __post_init__(self) -> None:
        collator_class(self.template)  # a template that trains, else a ConfigError
        if self.cognition is not None and self.template != "chat":
            raise ConfigError(
                "cognition turns are question-answer turns: they need the chat template"
            )
        for spec in self.objectives:
            if not isinstance(spec, ObjectiveSpec):
                raise ConfigError(f"Stage.objectives holds ObjectiveSpec items, got {spec!r}")

    @classmethod
    def defaults(cls, name: str, **changes: Any) -> Stage:
        """LLaVA-1.5's choices for `pretrain` or `sft`, with `changes` applied."""
        if name not in STAGE_DEFAULTS:
            raise ConfigError(f"stage must be one of {sorted(STAGE_DEFAULTS)}, got {name!r}")
        return replace(STAGE_DEFAULTS[name], **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["unlock"] = self.unlock.to_dict()
        if self.cognition is None:
            del out["cognition"]  # settings recorded before cognition turns existed stay equal
        return out


STAGE_DEFAULTS = {
    "pretrain": Stage("pretrain", "plain", UnlockSpec(llm="frozen", vision="frozen")),
    "sft": Stage("sft", "chat", UnlockSpec(llm="full", vision="frozen")),
}
DEFAULT_LR = {"pretrain": 1e-3, "sft": 2e-5}


def build_objectives(specs: Sequence[ObjectiveSpec]) -> list[Objective]:
    """Objective modules from their specs (weights and options applied)."""
    return [spec.build() for spec in specs]


def _other(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What differs between a run's recorded settings and the asked ones, in words."""
    old = old or {}
    ident_old, ident_new = old.get("identity") or {}, new["identity"]
    words = {"model": "made from another model", "data": "made from other data"}
    parts = [w for k, w in words.items() if ident_old.get(k) != ident_new[k]]
    keys = sorted(k for k in set(old) | set(new) if k != "identity" and old.get(k) != new.get(k))
    if keys:
        parts.append(f"with other settings ({', '.join(keys)})")
    return " and ".join(parts) or "with other settings"


def _connector_reads_text(model: Any) -> bool:
    from modalign.models.parts import model_parts

    return bool(getattr(model_parts(model).connector, "accepts_text", False))


def run_stage(
    model: Any,
    processor: Any,
    conversations: Sequence[Conversation],
    stage: Stage,
    config: TrainConfig,
    out: str | Path,
    *,
    callbacks: Sequence[Any] = (),
    resume: bool = True,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Unlock, train (resumable), merge LoRA if asked, save to out/model; returns the summary
    (also out/stage.json). A finished stage in `out` with the same settings is not redone.
    `record`: more settings that identify the run (e.g. the recipe's model changes).

    The run's identity (a fingerprint of the model it starts from and of its data) is part of
    its settings: a run in `out` made from another model or other data is neither resumed nor
    returned. Everything is checked (unlock against the model, objectives, data) before the
    first file is written."""
    out = Path(out)
    settings = {
        "stage": stage.to_dict(),
        "train": config.to_dict(),
        "n_samples": len(conversations),
    }
    settings.update(record or {})
    settings["identity"] = {"model": model_fingerprint(model), "data": data_identity(conversations)}
    settings = json.loads(json.dumps(settings))
    done = out / SUMMARY
    if resume and done.is_file():
        summary = json.loads(done.read_text(encoding="utf-8"))
        if summary.get("settings") != settings:
            raise ConfigError(f"{out} holds a finished stage {_other(summary.get('settings'), settings)}; "
                              "use a new --out")  # fmt: skip
        return summary
    started = out / STARTED
    if resume and started.is_file():  # an interrupted run: resume it only with its own settings
        previous = json.loads(started.read_text(encoding="utf-8"))
        if previous != settings:
            raise ConfigError(f"{out} holds an interrupted stage {_other(previous, settings)}; "
                              "use a new --out")  # fmt: skip
    check_loggers(config.report_to)
    report = apply_unlock(model, stage.unlock)
    collate_cls = collator_class(stage.template)
    kwargs = {"end": stage.plain_end} if stage.template == "plain" else {}
    objectives = build_objectives(stage.objectives)
    for objective in objectives:
        objective.setup(model, processor)
    extras = tuple(dict.fromkeys(k for o in objectives for k in o.batch_keys))
    collate = collate_cls(
        processor,
        stage.max_length,
        connector_text=_connector_reads_text(model),
        extras=extras,
        **kwargs,
    )
    dataset = ConversationDataset(conversations)
    if stage.cognition is not None:
        dataset = cognition_dataset(dataset, stage.cognition, processor.tokenizer, config.seed)
    if not started.is_file():  # every rank writes the same content atomically
        atomic_write_json(started, settings)
    log, trainer = fit(
        model,
        dataset,
        collate,
        config,
        out,
        trainer_cls=AlignmentTrainer,
        trainer_kwargs={"objectives": objectives, "component_lrs": stage.component_lrs},
        callbacks=callbacks,
        resume=resume,
    )
    merged = finish_stage(model, stage.unlock)
    stopped = [getattr(cb, "stopped_at", None) for cb in callbacks]
    summary = {
        "settings": settings,
        "unlock": report.to_dict(),
        "lora_merged": merged,
        "steps": log["steps"],
        "stopped_early_at": next((s for s in stopped if s is not None), None),
        "train_loss": log["train_loss"],
        "runtime_s": log["runtime_s"],
        "final_logs": log["history"][-1] if log["history"] else {},
    }
    if trainer.is_world_process_zero():
        from modalign.models.checkpoint import save_model

        save_model(model, processor, out / "model", overwrite=True)
        if objectives:
            from safetensors.torch import save_file

            state = {
                k: v.detach().cpu().contiguous() for k, v in trainer.objectives.state_dict().items()
            }
            save_file(state, str(out / "objectives.safetensors"))
        atomic_write_json(done, summary)
    trainer.accelerator.wait_for_everyone()
    return json.loads(json.dumps(summary))  # as a re-run reads it back from stage.json
