"""`AlignmentTrainer`: transformers' Trainer with alignment objectives, per-component learning
rates, per-term logging and exact kill-and-resume.

    trainer = AlignmentTrainer(model=model, args=args, train_dataset=ds, data_collator=collate,
                               objectives=[OBJECTIVES["mfid"]()], component_lrs={"connector": 1e-3})
    trainer.train(resume_from_checkpoint=last_checkpoint)

- Loss: `modalign.train.loss.compute_loss` (L_lm + sum_i w_i L_i, the same function a plain loop
  uses). The LM term keeps the Trainer's exact token weighting over gradient accumulation and
  processes (`num_items_in_batch`); objective terms are per-micro-batch means, scaled so every
  micro-batch counts equally.
- Logs: `loss/lm` (token-weighted) and every objective term, averaged over the logging window and
  over processes, plus the objectives' own values (e.g. a temperature), through the Trainer's
  loggers (TensorBoard, W&B ... via `report_to`).
- Objective parameters join the optimizer (their own group), are all-reduced across processes,
  and are checkpointed with the trainable model parameters (`ResumableTrainer`), so a resumed run
  continues bit for bit: frozen parameters are rebuilt from the same starting checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from modalign.errors import ModelError
from modalign.methods.objectives import Objective
from modalign.models.collate import IGNORE
from modalign.train.fit import ResumableTrainer
from modalign.train.loss import compute_loss


class _AfterStep(TrainerCallback):
    """After each optimizer step: the objectives' hooks (e.g. clamp a temperature), and their
    gradients cleared (the Trainer zeroes only the model's)."""

    def __init__(self, objectives: nn.ModuleList) -> None:
        self.objectives = objectives

    def on_optimizer_step(self, args, state, control, **kwargs):
        for objective in self.objectives:
            objective.after_optimizer_step()
        self.objectives.zero_grad(set_to_none=True)


class AlignmentTrainer(ResumableTrainer):
    """Trainer + objectives (see module docstring). `component_lrs`: learning rate per model
    component ("connector", "llm", "vision", "moca", "lora"); others use `args.learning_rate`."""

    def __init__(
        self,
        *args,
        objectives: Sequence[Objective] = (),
        component_lrs: Mapping[str, float] | None = None,
        objective_lr: float | None = None,
        **kwargs,
    ) -> None:
        callbacks = list(kwargs.pop("callbacks", None) or [])
        self.objectives = nn.ModuleList(objectives)
        self.component_lrs = dict(component_lrs or {})
        self.objective_lr = objective_lr
        super().__init__(*args, callbacks=[*callbacks, _AfterStep(self.objectives)], **kwargs)
        self.objectives.to(self.args.device)
        self._sums: dict[str, torch.Tensor] = {}
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "bind"):  # e.g. the MIR monitor logs through this trainer
                callback.bind(self)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            from modalign.train.unlock import param_groups

            target = self.model if model is None else model
            groups = param_groups(
                target, self.component_lrs, self.args.learning_rate, self.args.weight_decay
            )
            params = [p for p in self.objectives.parameters() if p.requires_grad]
            if params:
                lr = self.objective_lr if self.objective_lr is not None else self.args.learning_rate
                groups.append(
                    {"name": "objectives", "params": params, "lr": lr, "weight_decay": 0.0}
                )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scaled = bool(self.model_accepts_loss_kwargs and num_items_in_batch is not None)
        kwargs = {"num_items_in_batch": num_items_in_batch} if scaled else {}
        result = compute_loss(model, inputs, list(self.objectives), model_kwargs=kwargs)
        lm = result.outputs.loss
        extra = result.loss - lm  # the objectives' weighted terms (per-micro-batch means)
        if scaled:  # as Trainer.compute_loss: lm is normalised over the accumulated global batch
            if self.args.average_tokens_across_devices:
                lm = lm * self.accelerator.num_processes
            loss = lm + extra / self.current_gradient_accumulation_steps
        else:
            loss = result.loss  # the Trainer divides by the accumulation steps
        self._record(
            inputs, result.terms, result.outputs.loss, num_items_in_batch if scaled else None
        )
        return (loss, result.outputs) if return_outputs else loss

    def _record(self, inputs, terms, lm, num_items) -> None:
        """Accumulate the window's token-weighted LM NLL and per-micro-batch objective terms."""
        tokens = (inputs["labels"][:, 1:] != IGNORE).sum().to(lm.device, torch.float64)
        nll = lm.detach().double() * (num_items if num_items is not None else tokens)
        updates = {
            "lm_nll": nll,
            "lm_tokens": tokens,
            "micro_steps": torch.ones((), dtype=torch.float64),
        }
        updates.update({k: v.double() for k, v in terms.items() if k != "lm"})
        for key, value in updates.items():
            value = value.to(self.args.device)
            self._sums[key] = self._sums.get(key, 0) + value

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        world = self.accelerator.num_processes
        if world > 1:  # objectives live outside DDP: average their gradients by hand
            for p in self.objectives.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= world
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._sums:
            keys = sorted(self._sums)
            stacked = torch.stack([torch.as_tensor(self._sums[k]).double() for k in keys])
            if self.accelerator.num_processes > 1:
                stacked = self.accelerator.reduce(stacked, reduction="sum")
            sums = dict(zip(keys, stacked.tolist(), strict=True))
            logs["loss/lm"] = sums["lm_nll"] / max(sums["lm_tokens"], 1.0)
            for key in keys:
                if key not in ("lm_nll", "lm_tokens", "micro_steps"):
                    logs[f"loss/{key}"] = sums[key] / sums["micro_steps"]
            for objective in self.objectives:
                logs.update({f"{objective.name}/{k}": v for k, v in objective.extra_logs().items()})
            self._sums = {}
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, torch.Tensor]:
        return {f"objectives.{k}": v for k, v in self.objectives.state_dict().items()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        want = {f"objectives.{k}" for k in self.objectives.state_dict()}
        if set(state) != want:
            raise ModelError(
                f"checkpoint objective state {sorted(state)[:4]} does not match this run's "
                f"objectives {sorted(want)[:4]}; resume with the same --objective flags"
            )
        self.objectives.load_state_dict(
            {k.removeprefix("objectives."): v for k, v in state.items()}
        )
