"""One resumable, seeded training loop for every lab stage, on `transformers.Trainer`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one stage."""

    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    save_steps: int = 0  # 0: only the final state (no intermediate checkpoints)
    keep_checkpoints: int | None = 2  # None: keep all (e.g. to trace a metric over training)
    log_steps: int = 25
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or not self.lr > 0:
            raise ValueError(f"steps, batch_size and lr must be positive: {self}")


class LabTrainer(Trainer):
    """Trainer whose resume loads weights through from_pretrained.

    transformers 5.x saves checkpoints with save_pretrained (which renames LLaVA keys to the
    legacy layout) but the stock resume path loads the raw file without renaming, silently
    leaving every weight at its fresh value; from_pretrained applies the key mapping.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.model if model is None else model
        if not isinstance(model, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint)
        model.load_state_dict(loaded.state_dict(), strict=True)
        return None


class _StopAt(TrainerCallback):
    """Stop training after a given global step (simulates an interruption in tests)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control


def train(
    model: PreTrainedModel,
    dataset: Dataset,
    collator,
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = True,
    stop_at: int | None = None,
    compute_loss=None,
    callbacks: list | None = None,
) -> dict:
    """Train `model` in place; resumes from the last checkpoint in run_dir/checkpoints if any.

    Returns the final log (loss per logged step, train_loss, runtime), also written to
    run_dir/train_log.json. `stop_at` ends the run early after saving (tests of resumption).
    `compute_loss(outputs, labels, num_items_in_batch)` replaces the model's own loss (the
    batch must then carry `labels`); `callbacks` are extra TrainerCallbacks (e.g. MIRTrace).
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(config.warmup_ratio * config.steps)),
        weight_decay=config.weight_decay,
        logging_steps=config.log_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or config.steps,
        save_total_limit=config.keep_checkpoints,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not config.progress,
        save_only_model=False,
    )
    callbacks = list(callbacks or []) + ([_StopAt(stop_at)] if stop_at is not None else [])
    trainer = LabTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=callbacks,
        compute_loss_func=compute_loss,
    )
    last = get_last_checkpoint(str(ckpt_dir)) if resume and ckpt_dir.is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)
    log = {
        "steps": trainer.state.global_step,
        "epochs": trainer.state.global_step / steps_per_epoch,
        "train_loss": result.training_loss,
        "runtime_s": result.metrics.get("train_runtime"),
        "resumed_from": last,
        "history": [h for h in trainer.state.log_history if "loss" in h],
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    return log
