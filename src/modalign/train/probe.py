"""A measurement taken every N optimizer steps during training: the shared mechanics of the MIR
monitor and the lab's recalled-word trace. A subclass says what one measurement is (`entry`),
what of it goes to the Trainer's loggers (`logs`) and, optionally, when to stop (`should_stop`);
this class records step 0 and every N-th and the last step, keeps the history in every
checkpoint (so a resumed run continues it), and writes it as JSON after each measurement.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from modalign.atomic import atomic_write_json
from modalign.errors import ConfigError


class PeriodicProbe(TrainerCallback):
    """Base class; `kind` names the state file in checkpoints (KIND_state.json) and `curve` the
    history file in `out_dir` (CURVE.json)."""

    kind = "probe"
    curve = "probe_curve"

    def __init__(self, every: int, out_dir: str | os.PathLike[str] | None = None) -> None:
        if every < 1:
            raise ConfigError(f"{self.kind}: every must be >= 1 step, got {every}")
        self.every = every
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.history: list[dict[str, Any]] = []
        self.stopped_at: int | None = None
        self._trainer = None

    # ------------------------------------------------------------------ what subclasses say
    def entry(self, model: Any, step: int) -> dict[str, Any]:
        """One measurement of `model` (JSON-ready); called in eval mode with the RNG states
        saved and restored around it (`evaluating`), so training goes on as if unmeasured."""
        raise NotImplementedError

    def logs(self, entry: dict[str, Any]) -> dict[str, float]:
        """What of an entry goes to the Trainer's loggers."""
        return {}

    def should_stop(self, step: int) -> bool:
        """Whether training should stop after this step's measurement."""
        return False

    def settings(self) -> dict[str, Any]:
        """The probe's settings, saved beside the history."""
        return {"every": self.every}

    # ------------------------------------------------------------------ mechanics
    def bind(self, trainer: Any) -> None:
        """Log through this trainer's loggers (AlignmentTrainer binds its callbacks itself)."""
        self._trainer = trainer

    def _record(self, model: Any, step: int, control: Any = None) -> None:
        with evaluating(model):
            entry = {"step": step, **self.entry(model, step)}
        self.history.append(entry)
        logs = self.logs(entry)
        if self._trainer is not None and logs:
            # Trainer.log clears control.should_log; keep the step's own loss logging as it was.
            keep = control.should_log if control is not None else None
            self._trainer.log(logs)
            if control is not None:
                control.should_log = keep
        self.write_json()

    def to_dict(self) -> dict[str, Any]:
        """Settings and history (what the JSON file and the checkpoints hold)."""
        return {**self.settings(), "stopped_at": self.stopped_at, "history": self.history}

    def write_json(self) -> None:
        if self.out_dir is not None and is_main_process():
            atomic_write_json(self.out_dir / f"{self.curve}.json", self.to_dict())

    def _restore(self, path: Path) -> None:
        if not path.is_file():
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        self.history = [h for h in data.get("history", []) if _finite(h)]
        self.stopped_at = data.get("stopped_at")

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step > 0:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._restore(folder / f"{self.kind}_state.json")
        if not self.history:
            self._record(model, state.global_step, control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every and step != state.max_steps:
            return control
        if not self.history or self.history[-1]["step"] != step:
            self._record(model, step, control)
        if self.should_stop(step):
            self.stopped_at = step
            control.should_training_stop = True
            control.should_save = True
            self.write_json()
        return control

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            atomic_write_json(folder / f"{self.kind}_state.json", self.to_dict())
        return control


def _finite(entry: dict[str, Any]) -> bool:
    return all(math.isfinite(v) for v in entry.values() if isinstance(v, float))


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Eval mode and saved RNG states for a measurement in the middle of training; both are
    restored afterwards, so measuring does not change what training does next."""
    rng, training = torch.get_rng_state(), model.training
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        model.eval()
        yield
    finally:
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        model.train(training)


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
