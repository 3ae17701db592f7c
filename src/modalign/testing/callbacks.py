"""Trainer callbacks for tests of training code (not used at runtime)."""

from __future__ import annotations

from transformers import TrainerCallback


class StopAfter(TrainerCallback):
    """Stops training right after global step `step`, saving a checkpoint there: it stands in
    for a process killed at that point (a resumed run must then match an uninterrupted one)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control
