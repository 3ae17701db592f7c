"""The MIR monitor: MIR (and per-layer FD) on a fixed probe set every N steps during training,
logged through the Trainer's loggers, with an optional early stop when MIR has plateaued.

    monitor = MIRMonitor(processor, probe_pairs, every=100, out_dir=run / "mir_monitor")
    trainer = AlignmentTrainer(..., callbacks=[monitor])   # binds itself; or monitor.bind(trainer)

Plateau rule (the paper gives none; ours, see docs/methods.md): smooth MIR with an EMA,
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

import os
from collections.abc import Sequence
from typing import Any

from modalign.data.pairs import Pair
from modalign.errors import ConfigError
from modalign.train.probe import PeriodicProbe


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


class MIRMonitor(PeriodicProbe):
    """See the module docstring. `options` is a `modalign.measure.run.RunOptions` (template, batch
    size, sqrt, outliers...); `stop=False` only records."""

    kind = "mir_monitor"
    curve = "mir_curve"

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
        super().__init__(every, out_dir)
        if patience < 1 or not 0 < delta < 1 or not 0 <= smoothing < 1:
            raise ConfigError(
                f"MIR monitor: need patience >= 1, 0 < delta < 1, 0 <= smoothing < 1 "
                f"(got {patience}, {delta}, {smoothing})"
            )
        if not pairs:
            raise ConfigError("MIR monitor: the probe set is empty")
        from modalign.measure.run import RunOptions

        self.processor, self.pairs = processor, list(pairs)
        self.patience, self.delta, self.smoothing = patience, delta, smoothing
        self.min_steps, self.stop = min_steps, stop
        self.options = options or RunOptions(batch_size=16, progress=False)

    def measure(self, model: Any) -> Any:
        """MIR of `model` on the probe set (an MIRResult)."""
        from modalign.measure.run import run_mir
        from modalign.models import get_adapter

        return run_mir(get_adapter(model, self.processor), self.pairs, self.options)

    def entry(self, model: Any, step: int) -> dict[str, Any]:
        result = self.measure(model)
        prev = self.history[-1]["smoothed"] if self.history else result.mir
        smoothed = self.smoothing * prev + (1 - self.smoothing) * result.mir
        return {"mir": result.mir, "smoothed": smoothed, "per_layer": list(result.per_layer),
                "layers": list(result.layers)}  # fmt: skip

    def logs(self, entry: dict[str, Any]) -> dict[str, float]:
        layers = zip(entry["layers"], entry["per_layer"], strict=True)
        return {"mir": entry["mir"], "mir/smoothed": entry["smoothed"],
                **{f"mir/layer_{k}": v for k, v in layers}}  # fmt: skip

    def should_stop(self, step: int) -> bool:
        """The plateau rule on the history so far."""
        if not self.stop or step < self.min_steps:
            return False
        return plateaued([h["smoothed"] for h in self.history], self.patience, self.delta)

    def settings(self) -> dict[str, Any]:
        return {
            "rule": {"kind": "plateau", "patience": self.patience, "delta": self.delta,
                     "smoothing": self.smoothing, "min_steps": self.min_steps, "stop": self.stop},
            "every": self.every,
            "n_probe": len(self.pairs),
        }  # fmt: skip

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
