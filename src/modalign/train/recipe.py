"""A full recipe for one stage: what to change in the model, what to train, how, and how to watch it.

`modalign train` and `modalign lab pretrain|sft|cycle` build a `Recipe` from the same flags
(`modalign.cli.train_options`) and hand it to `train_stage`, so both run identical code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from modalign.data.conversations import Conversation
from modalign.data.pairs import Pair
from modalign.errors import ConfigError
from modalign.train.fit import TrainConfig
from modalign.train.stage import Stage, prepare_model, run_stage


@dataclass(frozen=True)
class MonitorSettings:
    """The MIR monitor's schedule and plateau rule (see modalign.train.monitor)."""

    every: int
    patience: int = 3
    delta: float = 0.01
    smoothing: float = 0.5
    min_steps: int = 0
    stop: bool = True
    n: int = 100  # probe pairs

    def __post_init__(self) -> None:
        if self.every < 1 or self.n < 2:
            raise ConfigError(f"MIR monitor: every >= 1 and n >= 2 needed, got {self}")


@dataclass(frozen=True)
class Recipe:
    """Stage + optimisation + model changes (connector swap, MoCa) + optional MIR monitor."""

    stage: Stage
    train: TrainConfig
    connector: str | None = None  # a ConnectorSpec string; None keeps the model's connector
    moca: bool = False
    moca_std: float = 0.0
    monitor: MonitorSettings | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage.to_dict(),
            "train": self.train.to_dict(),
            "connector": self.connector,
            "moca": self.moca,
            "moca_std": self.moca_std,
            "monitor": asdict(self.monitor) if self.monitor else None,
        }


def prepare(model: Any, processor: Any, recipe: Recipe) -> tuple[Any, Any]:
    """The recipe's model changes: a fresh connector and/or MoCa (see `prepare_model`)."""
    return prepare_model(
        model, processor, connector=recipe.connector, moca=recipe.moca,
        moca_std=recipe.moca_std, seed=recipe.train.seed,
    )  # fmt: skip


def train_stage(
    model: Any,
    processor: Any,
    conversations: Sequence[Conversation],
    recipe: Recipe,
    out: str | Path,
    *,
    probe: Sequence[Pair] | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """`run_stage` on a model `prepare` made ready; with a monitor, MIR on `probe` is
    traced (out/mir_monitor/mir_curve.json + .png) and can stop training on a plateau.
    MoCa, when the model has it, trains in every stage (as in the official code)."""
    from modalign.methods.moca import get_moca

    out = Path(out)
    stage = recipe.stage
    if get_moca(model) is not None and not stage.unlock.moca:
        stage = replace(stage, unlock=replace(stage.unlock, moca=True))
    extra = list(callbacks)
    if recipe.monitor is not None:
        if not probe:
            raise ConfigError("the MIR monitor needs probe pairs (--mir-images/--mir-texts)")
        from modalign.train.monitor import MIRMonitor

        m = recipe.monitor
        extra.append(
            MIRMonitor(
                processor, list(probe)[: m.n], m.every, patience=m.patience, delta=m.delta,
                smoothing=m.smoothing, min_steps=m.min_steps, stop=m.stop,
                out_dir=out / "mir_monitor",
            )
        )  # fmt: skip
    record = {k: v for k, v in recipe.to_dict().items() if k not in ("stage", "train")}
    return run_stage(
        model, processor, conversations, stage, recipe.train, out, callbacks=extra, record=record
    )
