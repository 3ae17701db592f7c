"""The MIR monitor: MIR (and per-layer FD) on a fixed probe set every N steps during training,
logged through the Trainer's loggers, with an optional early stop when MIR has plateaued.

    monitor = MIRMonitor(processor, probe_pairs, every=100, out_dir=run / "mir_monitor")
    trainer = AlignmentTrainer(..., callbacks=[monitor])   # binds itself; or monitor.bind(trainer)

Plateau rule (the paper gives none; METHODS.md 1.5 and our choice): smooth MIR with an EMA,
s_t = b s_{t-1} + (1 - b) m_t (b = `smoothing`, 0.5); stop when over the last `patience`
evaluations (default 3) the smoothed value stayed within a band narrower than `delta` (default
1%) relative: max - min of s_{t-patience..t} < delta |s_{t-patience}|. A curve that still falls,
still rises, or rises and falls back (MIR's first steps in the miniature world) is not a plateau;
comparing only the window's ends would stop such a run at the bump's far side. `min_steps` keeps the
rule off early on. Calibrate `delta` against the run-to-run noise of MIR on your probe set
(the paper's own re-run of one recipe moved MIR by 0.19).

Scoring uses the same runner as `modalign mir`; the model is put in eval mode and the torch RNG
state is restored afterwards, so a monitored run trains exactly like an unmonitored one. Its
history is saved in each checkpoint and restored on resume. The curve is written as JSON after
every evaluation and as a PNG at the end of training.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from modalign.atomic import atomic_write_json
from modalign.data.pairs import Pair
from modalign.errors import ConfigError

STATE_NAME = "mir_monitor_state.json"


def plateaued(smoothed: Sequence[float], patience: int, delta: float) -> bool:
    """Whether over the last `patience` evaluations the smoothed value stayed within a band of
    width < delta (relative to where the window starts). A band, not the two ends: a curve that
    rises and falls back through its old value (MIR's early bump) is not a plateau."""
    if len(smoothed) <= patience:
        return False
    window = smoothed[-1 - patience :]
    return max(window) - min(window) < delta * abs(window[0])


def first_plateau(
    steps: Sequence[int], smoothed: Sequence[float], patience: int, delta: float, min_steps: int = 0
) -> int | None:
    """The first step at which the plateau rule would stop a run with this smoothed history
    (None: it never fires), e.g. to ask after the fact whether a logged run could have stopped."""
    for i, step in enumerate(steps):
        if step >= min_steps and plateaued(smoothed[: i + 1], patience, delta):
            return int(step)
    return None


class MIRMonitor(TrainerCallback):
    """See the module docstring. `options` is a `modalign.runner.RunOptions` (template, batch
    size, sqrt, outliers...); `stop=False` only records."""

    def __init__(
        self,
        processor: Any,
        pairs: Sequence[Pair],
        every: int = 100,
        *,
        patience: int = 3,
        delta: float = 0.01,
        smoothing: float = 0.5,
        min_steps: int = 0,
        stop: bool = True,
        out_dir: str | os.PathLike[str] | None = None,
        options: Any = None,
    ) -> None:
        if every < 1:
            raise ConfigError(f"MIR monitor: every must be >= 1 step, got {every}")
        if patience < 1 or not 0 < delta < 1 or not 0 <= smoothing < 1:
            raise ConfigError(
                f"MIR monitor: need patience >= 1, 0 < delta < 1, 0 <= smoothing < 1 "
                f"(got {patience}, {delta}, {smoothing})"
            )
        if not pairs:
            raise ConfigError("MIR monitor: the probe set is empty")
        from modalign.runner import RunOptions

        self.processor, self.pairs, self.every = processor, list(pairs), every
        self.patience, self.delta, self.smoothing = patience, delta, smoothing
        self.min_steps, self.stop = min_steps, stop
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.options = options or RunOptions(batch_size=16, progress=False)
        self.history: list[dict[str, Any]] = []
        self.stopped_at: int | None = None
        self._trainer = None

    def bind(self, trainer: Any) -> None:
        """Log through this trainer's loggers (AlignmentTrainer binds its callbacks itself)."""
        self._trainer = trainer

    # ------------------------------------------------------------------ measuring
    def measure(self, model: Any) -> Any:
        """MIR of `model` on the probe set (an MIRResult); training state and RNG untouched."""
        from modalign.models import get_adapter
        from modalign.runner import run_mir

        with evaluating(model):
            return run_mir(get_adapter(model, self.processor), self.pairs, self.options)

    def _record(self, model: Any, step: int, control: Any = None) -> None:
        result = self.measure(model)
        prev = self.history[-1]["smoothed"] if self.history else result.mir
        smoothed = self.smoothing * prev + (1 - self.smoothing) * result.mir
        self.history.append({"step": step, "mir": result.mir, "smoothed": smoothed,
                             "per_layer": list(result.per_layer), "layers": list(result.layers)})  # fmt: skip
        if self._trainer is not None:
            logs = {"mir": result.mir, "mir/smoothed": smoothed}
            logs.update(
                {f"mir/layer_{k}": v for k, v in zip(result.layers, result.per_layer, strict=True)}
            )
            # Trainer.log clears control.should_log; keep the step's own loss logging as it was.
            keep = control.should_log if control is not None else None
            self._trainer.log(logs)
            if control is not None:
                control.should_log = keep
        self.write_json()

    def should_stop(self, step: int) -> bool:
        """The plateau rule on the history so far."""
        if not self.stop or step < self.min_steps:
            return False
        return plateaued([h["smoothed"] for h in self.history], self.patience, self.delta)

    # ------------------------------------------------------------------ callback events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step > 0:
            self._restore(Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_NAME)
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
            atomic_write_json(folder / STATE_NAME, self.to_dict())
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.out_dir is not None and self.history and state.is_world_process_zero:
            from modalign.report.curves import plot_curve

            plot_curve(
                [h["step"] for h in self.history],
                [h["mir"] for h in self.history],
                self.out_dir / "mir_curve.png",
                smoothed=[h["smoothed"] for h in self.history],
                stop_step=self.stopped_at,
            )
        return control

    # ------------------------------------------------------------------ state
    def to_dict(self) -> dict[str, Any]:
        """History and settings (what the JSON file and the checkpoints hold)."""
        return {
            "rule": {"kind": "plateau", "patience": self.patience, "delta": self.delta,
                     "smoothing": self.smoothing, "min_steps": self.min_steps, "stop": self.stop},
            "every": self.every,
            "n_probe": len(self.pairs),
            "stopped_at": self.stopped_at,
            "history": self.history,
        }  # fmt: skip

    def write_json(self) -> None:
        if self.out_dir is not None and _is_main():
            atomic_write_json(self.out_dir / "mir_curve.json", self.to_dict())

    def _restore(self, path: Path) -> None:
        if not path.is_file():
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        self.history = [h for h in data.get("history", []) if math.isfinite(h.get("mir", math.nan))]
        self.stopped_at = data.get("stopped_at")


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


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
