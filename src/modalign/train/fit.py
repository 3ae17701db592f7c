"""The one training loop: `TrainConfig` -> transformers `TrainingArguments` -> Trainer, resumable.

Every model modalign trains goes through `fit`: the LVLM stages (pre-training, SFT; with
`AlignmentTrainer`) and the miniature world's tower pre-training (tiny CLIP and LM; with
`ResumableTrainer`). Re-running the same call after a kill resumes from the last checkpoint in
`run_dir/checkpoints` and ends bit for bit where an uninterrupted run ends (same seed, threads).
Multi-process runs come from the launcher (`torchrun`, `accelerate launch`): the Trainer reads
the environment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from modalign.atomic import atomic_write_json
from modalign.errors import ConfigError
from modalign.settings import option

SCHEDULES = ("cosine", "linear", "constant_with_warmup")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one stage (per-device batch; global = batch x accum x processes).

    `steps` None: one epoch (or the recipe's `epochs`), and `lr` None: the stage's rate, both
    fixed by `resolved` before training; a recorded config holds the numbers it trained with."""

    steps: int | None = option(
        None, help="optimizer steps (default: one epoch, or --epochs)", metavar="N"
    )
    batch_size: int = option(16, help="per-device batch (global: x --grad-accum x processes)")
    lr: float | None = option(None, help="peak learning rate", metavar="LR")
    seed: int = option(0, help="seed of init and data order")
    grad_accum: int = option(1, help="gradient accumulation steps")
    warmup_ratio: float = option(0.05, help="warmup fraction of the steps")
    schedule: str = option("cosine", help="learning-rate schedule", choices=SCHEDULES)
    weight_decay: float = option(0.0, help="AdamW weight decay")
    max_grad_norm: float = option(1.0, help="gradient clipping norm")
    save_steps: int = option(0, help="checkpoint every N steps (0: only the final state)")
    keep_checkpoints: int | None = option(2, help="checkpoints kept (none: all)", cli=False)
    log_steps: int = option(25, help="log every N steps")
    precision: str = option("no", help="mixed precision", choices=PRECISIONS)
    gradient_checkpointing: bool = option(False, help="recompute activations in the backward pass")
    report_to: tuple[str, ...] = option(
        (), help="Trainer logger: tensorboard, wandb ...", metavar="LOGGER"
    )
    progress: bool = option(True, help="no progress bar", flag="--quiet", negate=True)
    extra: dict[str, Any] = option(
        default_factory=dict, help="more TrainingArguments, verbatim", cli=False
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    def resolved(
        self, n_samples: int, default_lr: float | None = None, epochs: float | None = None
    ) -> TrainConfig:
        """The config with its steps (`epochs` over `n_samples` when unset; default one epoch)
        and learning rate (`default_lr` when unset) fixed."""
        steps = self.steps
        if steps is None:
            per_step = self.batch_size * self.grad_accum
            steps = max(1, math.ceil((epochs or 1.0) * n_samples / per_step))
        elif epochs is not None:
            raise ConfigError("give steps or epochs, not both")
        lr = self.lr if self.lr is not None else default_lr
        if lr is None:
            raise ConfigError("no learning rate: set lr")
        return replace(self, steps=steps, lr=lr)

    def training_arguments(self, run_dir: Path) -> TrainingArguments:
        """The TrainingArguments of this config, checkpointing under run_dir/checkpoints."""
        if self.steps is None or self.lr is None:
            raise ConfigError("resolve steps and lr first (TrainConfig.resolved)")
        return TrainingArguments(
            output_dir=str(Path(run_dir) / "checkpoints"),
            max_steps=self.steps,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum,
            learning_rate=self.lr,
            lr_scheduler_type=self.schedule,
            warmup_steps=max(1, int(self.warmup_ratio * self.steps)) if self.warmup_ratio else 0,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            logging_steps=self.log_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or self.steps,
            save_total_limit=self.keep_checkpoints,
            seed=self.seed,
            data_seed=self.seed,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            report_to=list(self.report_to),
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=not self.progress,
            save_only_model=False,
            bf16=self.precision == "bf16",
            fp16=self.precision == "fp16",
            activation_checkpointing=self.gradient_checkpointing,
            ddp_find_unused_parameters=True,  # frozen towers: not every trainable part gets a grad
            **self.extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LOGGER_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # modalign[...] installs them


def check_loggers(report_to: Sequence[str]) -> None:
    """Every requested Trainer logger is installed: a missing one is one line before any model
    loads (transformers would fail after the load, with a traceback)."""
    names = [n for n in report_to if n not in ("none", "all")]
    if not names:
        return
    from transformers.integrations import get_available_reporting_integrations

    available = set(get_available_reporting_integrations())
    for name in names:
        if name not in available:
            extra = LOGGER_EXTRAS.get(name)
            how = f"pip install 'modalign[{extra}]'" if extra else f"install {name}"
            raise ConfigError(f"--report-to {name}: the {name} logger is not installed ({how})")


class _LogLastStep(TrainerCallback):
    """Logs the last step whatever `log_steps` is: a run shorter than it, or ending between two
    logging steps, still reports its final loss."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
        return control


class _RestoreLossSum(TrainerCallback):
    """Puts a resumed run's loss sum back once transformers has reset it for the new `train()`
    call (at train begin), so the run's mean loss counts every step, as uninterrupted."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        resumed = getattr(self.trainer, "_resumed_loss_sum", None)
        if resumed is not None:
            self.trainer._total_loss_scalar = resumed


class ResumableTrainer(Trainer):
    """Trainer whose checkpoints also hold the trainable parameters by their in-memory names
    (`modalign_state.safetensors`) and resume from them. transformers saves some families under
    renamed keys (LLaVA's legacy layout) and its stock resume reloads them without the renaming,
    which silently leaves weights at their fresh values; loading our own file avoids that and
    works for any modification (MoCa, LoRA, connectors) attached in memory."""

    state_file = "modalign_state.safetensors"
    loss_key = "trainer.loss_sum"  # the running sum of the logged training loss, for resumes

    def extra_state(self) -> dict[str, torch.Tensor]:
        """More tensors to checkpoint (subclasses: objective parameters)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `extra_state` saved."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        model = self.accelerator.unwrap_model(self.model)
        state = {f"model.{n}": p for n, p in model.named_parameters() if p.requires_grad}
        state.update(self.extra_state())
        running = getattr(self, "_total_loss_scalar", 0.0) + float(getattr(self, "_tr_loss", 0.0))
        state[self.loss_key] = torch.tensor([running], dtype=torch.float64)
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}

    def mean_train_loss(self) -> float:
        """The training loss averaged over every step of the run, resumed or not (transformers'
        own `training_loss` averages only the steps of the last `train()` call)."""
        return self._total_loss_scalar / max(self.state.global_step, 1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_callback(_RestoreLossSum(self))
        self.add_callback(_LogLastStep())

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        from safetensors.torch import save_file

        save_file(
            self.trainable_state(), str(Path(output_dir or self.args.output_dir) / self.state_file)
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        path = Path(resume_from_checkpoint) / self.state_file
        if not path.is_file():  # not written by this trainer: the stock path
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_file

        from modalign.errors import ModelError

        state = load_file(str(path))
        loss_sum = state.pop(self.loss_key, None)
        self._resumed_loss_sum = float(loss_sum[0]) if loss_sum is not None else None
        target = self.accelerator.unwrap_model(self.model if model is None else model)
        params = {n: p for n, p in target.named_parameters() if p.requires_grad}
        model_keys = {k for k in state if k.startswith("model.")}
        want = {f"model.{n}" for n in params}
        if model_keys != want:
            raise ModelError(
                f"{path} does not match this run's trainable parameters (missing "
                f"{sorted(want - model_keys)[:4]}, unexpected {sorted(model_keys - want)[:4]}); "
                "resume with the same settings"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[f"model.{name}"])
        self.load_extra_state({k: v for k, v in state.items() if k not in model_keys})
        return None


def _checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (None: it looks whole). Cheap: files present,
    trainer_state.json parses, the torch archives end in a readable zip directory and the
    safetensors headers parse - what an interrupted write or a truncated copy breaks."""
    import zipfile

    from safetensors import safe_open

    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json is not valid JSON"
    for name in ("optimizer.pt", "scheduler.pt"):
        file = folder / name
        if not file.is_file():
            return f"no {name}"
        if not zipfile.is_zipfile(file):
            return f"{name} is truncated or damaged"
    for file in folder.glob("*.safetensors"):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except Exception:  # safetensors raises several types for a damaged header
            return f"{file.name} is truncated or damaged"
    return None


def resumable_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint under `ckpt_dir` that can be resumed from; newer damaged or
    incomplete ones (a kill while writing) are skipped with a warning, never deleted."""
    import re
    import warnings

    found = [p for p in ckpt_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    for folder in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        problem = _checkpoint_problem(folder)
        if problem is None:
            return folder
        warnings.warn(f"skipping {folder} ({problem}); resuming from an earlier one", stacklevel=2)
    return None


def fit(
    model: torch.nn.Module,
    dataset: Dataset,
    collator: Any,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    trainer_cls: type[Trainer] = ResumableTrainer,
    trainer_kwargs: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool = True,
) -> tuple[dict[str, Any], Trainer]:
    """Train `model` in place (resuming from run_dir/checkpoints if any); returns the log (also
    written to run_dir/train_log.json by the main process) and the trainer."""
    run_dir = Path(run_dir)
    check_loggers(config.report_to)
    args = config.training_arguments(run_dir)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=list(callbacks),
        **(trainer_kwargs or {}),
    )
    ckpt_dir = Path(args.output_dir)
    found = resumable_checkpoint(ckpt_dir) if resume and ckpt_dir.is_dir() else None
    last = str(found) if found is not None else None
    result = trainer.train(resume_from_checkpoint=last)
    per_step = config.batch_size * config.grad_accum * trainer.accelerator.num_processes
    log = {
        "steps": trainer.state.global_step,
        "epochs": trainer.state.global_step * per_step / max(len(dataset), 1),
        "global_batch": per_step,
        "processes": trainer.accelerator.num_processes,
        "train_loss": (
            trainer.mean_train_loss()
            if hasattr(trainer, "mean_train_loss")
            else result.training_loss
        ),
        "runtime_s": result.metrics.get("train_runtime"),
        "resumed_from": last,
        "config": config.to_dict(),
        "history": [h for h in trainer.state.log_history if "loss" in h or "mir" in h],
    }
    if trainer.is_world_process_zero():
        atomic_write_json(run_dir / "train_log.json", log)
    return log, trainer
