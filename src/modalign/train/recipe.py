"""A full recipe for one stage: what to change in the model, what to train, how, and how to watch it.

Every field is declared once (`modalign.settings.option`): `modalign train` and `modalign lab
pretrain|sft|cycle` generate their flags from these dataclasses, config files fill them, and a
stage's recorded settings replay it. Both commands hand the recipe to `train_stage`, so they run
identical code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from modalign.data.conversations import Conversation
from modalign.data.pairs import Pair
from modalign.data.templates import measuring_templates
from modalign.errors import ConfigError
from modalign.settings import check_choices, option
from modalign.train.fit import TrainConfig
from modalign.train.stage import DEFAULT_LR, Stage, run_stage


@dataclass(frozen=True)
class MonitorSettings:
    """The MIR monitor's schedule and plateau rule (see modalign.train.monitor)."""

    every: int = option(help="score MIR on the probe set every N steps (0: off)")
    patience: int = option(3, help="plateau window, in evaluations")
    delta: float = option(0.01, help="plateau: the smoothed MIR moves less than this (relative)")
    smoothing: float = option(0.5, help="EMA factor of the smoothed MIR")
    min_steps: int = option(0, help="no early stop before this step")
    stop: bool = option(False, help="stop training when the smoothed MIR has plateaued "
                        "(default: record only)", flag="--mir-early-stop")  # fmt: skip
    n: int = option(100, help="probe pairs")
    template: str | None = option(
        None, choices=measuring_templates(),
        help="sequence layout of the probe (default: the model's chat template when its "
        "processor has one, else plain: BOS + image + text, as LLaVA's pre-training)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.every < 1 or self.n < 2:
            raise ConfigError(f"MIR monitor: every >= 1 and n >= 2 needed, got {self}")
        check_choices(self)

    def template_for(self, processor: Any) -> str:
        """The probe's layout on a model with `processor`: the one set, else chat when the
        processor has a chat template, else plain (a base pre-training checkpoint often has
        none). A chat layout asked of a processor without a template is one line, up front."""
        has_chat = bool(getattr(processor, "chat_template", None))
        if self.template is None:
            return "chat" if has_chat else "plain"
        if self.template == "chat" and not has_chat:
            raise ConfigError("--mir-template chat: the model's processor has no chat template; "
                              "use plain or official")  # fmt: skip
        return self.template

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["template"] is None:  # records made before the option existed stay equal
            del out["template"]
        return out


@dataclass(frozen=True)
class Recipe:
    """Stage + optimisation + model changes (connector swap, MoCa) + optional MIR monitor."""

    stage: Stage = option(help="what trains and how batches look", prefix="")
    train: TrainConfig = option(help="optimisation", prefix="")
    connector: str | None = option(
        None, metavar="SPEC",
        help="give the model a fresh connector: linear, mlp<N>x_gelu (mlp2x_gelu ...), qformer, "
        "resampler, pool, sa_perceiver, tiled (the last two: high-resolution tiles), with "
        "options as 'qformer:num_queries=32,text_input=instruction' (default: keep the model's)",
    )  # fmt: skip
    moca: bool = option(False, help="attach MoCa (per-layer vision scale/shift); a model that "
                        "carries MoCa trains it in every stage")  # fmt: skip
    moca_std: float = option(0.0, help="MoCa init std (0: identity)")
    monitor: MonitorSettings | None = option(None, help="the MIR monitor", prefix="mir-")
    epochs: float | None = option(
        None, help="epochs instead of --steps (resolved into steps before training)",
        metavar="E",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        if self.connector is not None:
            from modalign.methods.connectors import ConnectorSpec

            ConnectorSpec.parse(self.connector)  # an unknown name or option fails now

    @classmethod
    def defaults(cls, stage: str, **changes: Any) -> Recipe:
        """LLaVA-1.5's recipe for `stage` (`pretrain`: connector only, lr 1e-3; `sft`: connector
        + LLM, lr 2e-5; batch 16, warmup 0.03, a checkpoint every 100 steps), `changes` applied
        to its top-level fields; steps default to one epoch (`resolved`)."""
        train = TrainConfig(batch_size=16, lr=DEFAULT_LR.get(stage), warmup_ratio=0.03,
                            save_steps=100)  # fmt: skip
        return cls(**{"stage": Stage.defaults(stage), "train": train, **changes})

    def resolved(self, n_samples: int) -> Recipe:
        """The recipe with its steps (one epoch of `n_samples`, or `epochs`) and learning rate
        (the stage's) fixed: what trains and what is recorded."""
        lr = DEFAULT_LR.get(self.stage.name)
        return replace(self, train=self.train.resolved(n_samples, lr, self.epochs), epochs=None)

    def stage_for(self, model: Any) -> Stage:
        """The stage to run on `model`: MoCa trains whenever the model carries it (as in the
        official code), whether this recipe attached it or an earlier stage did."""
        from modalign.methods.moca import get_moca

        if get_moca(model) is not None and not self.stage.unlock.moca:
            return replace(self.stage, unlock=replace(self.stage.unlock, moca=True))
        return self.stage

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage.to_dict(),
            "train": self.train.to_dict(),
            "connector": self.connector,
            "moca": self.moca,
            "moca_std": self.moca_std,
            "monitor": self.monitor.to_dict() if self.monitor else None,
            **({"epochs": self.epochs} if self.epochs is not None else {}),  # before `resolved`
        }


def prepare(model: Any, processor: Any, recipe: Recipe) -> tuple[Any, Any]:
    """The recipe's model changes: a fresh connector (`recipe.connector`, seeded by the train
    seed) and/or MoCa attached (`recipe.moca`). A model that already carries MoCa keeps it, with
    its trained values, through a connector swap."""
    from modalign.methods.moca import attach_moca, detach_moca, get_moca

    seed = recipe.train.seed
    if recipe.connector is not None:
        from modalign.models.surgery.connector_llava import swap_connector

        carried = detach_moca(model) if get_moca(model) is not None else None
        model, processor = swap_connector(model, processor, recipe.connector, seed=seed)
        if carried is not None:
            settings = carried.settings()
            attach_moca(model, std=settings["std"], seed=settings["seed"]).load_state_dict(
                carried.state_dict()
            )
    if recipe.moca and get_moca(model) is None:
        attach_moca(model, std=recipe.moca_std, seed=seed)
    return model, processor


def train_stage(
    model: Any,
    processor: Any,
    conversations: Sequence[Conversation],
    recipe: Recipe,
    out: str | Path,
    *,
    probe: Sequence[Pair] | None = None,
    callbacks: Sequence[Any] = (),
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`run_stage` on a model `prepare` made ready; with a monitor, MIR on `probe` is
    traced (out/mir_monitor/mir_curve.json + .png) and can stop training on a plateau.
    MoCa, when the model has it, trains in every stage (as in the official code).
    `record`: more to keep in the stage's settings (e.g. the command's inputs, for a replay)."""
    out = Path(out)
    stage = recipe.stage_for(model)
    extra = list(callbacks)
    if recipe.monitor is not None:
        if not probe:
            raise ConfigError("the MIR monitor needs probe pairs (--mir-images/--mir-texts)")
        from modalign.measure import MIRSettings
        from modalign.train.monitor import MIRMonitor

        m = recipe.monitor
        options = MIRSettings(batch_size=16, progress=False, template=m.template_for(processor))
        extra.append(
            MIRMonitor(
                processor, list(probe)[: m.n], m.every, patience=m.patience, delta=m.delta,
                smoothing=m.smoothing, min_steps=m.min_steps, stop=m.stop,
                out_dir=out / "mir_monitor", options=options,
            )
        )  # fmt: skip
    kept = {k: v for k, v in recipe.to_dict().items() if k not in ("stage", "train")}
    return run_stage(
        model, processor, conversations, stage, recipe.train, out, callbacks=extra,
        record={**kept, **(record or {})},
    )  # fmt: skip
