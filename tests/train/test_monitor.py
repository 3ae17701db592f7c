"""The MIR monitor: plateau rule, early stop inside a real run, curve files, exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from modalign_lab.probes.mir import eval_pairs
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.conversations import caption_conversations
from modalign_lab.world.dataset import load_split

from modalign.data.conversations import ConversationDataset
from modalign.errors import ConfigError
from modalign.metrics import MIRResult
from modalign.models.collate import PlainCollator
from modalign.testing.callbacks import StopAfter
from modalign.train.fit import TrainConfig, fit
from modalign.train.monitor import MIRMonitor, first_plateau, plateaued
from modalign.train.trainer import AlignmentTrainer
from modalign.train.unlock import UnlockSpec, apply_unlock


def _ema(values, b=0.5):
    out = []
    for v in values:
        out.append(v if not out else b * out[-1] + (1 - b) * v)
    return out


def test_plateau_rule_fires_on_a_plateau_not_on_a_decline_or_a_rise():
    decline = _ema([4.0 - 0.1 * i for i in range(20)])
    rise = _ema([1.0 + 0.1 * i for i in range(20)])
    plateau = _ema([4.0, 3.5, 3.2, 3.1, 3.08, 3.07, 3.07, 3.069, 3.07, 3.068])
    assert not any(plateaued(decline[: i + 1], 3, 0.01) for i in range(20))
    assert not any(plateaued(rise[: i + 1], 3, 0.01) for i in range(20))
    first = next(i for i in range(len(plateau)) if plateaued(plateau[: i + 1], 3, 0.01))
    moved = [abs(plateau[i] - plateau[i - 3]) / plateau[i - 3] for i in range(3, len(plateau))]
    assert first == 3 + next(k for k, m in enumerate(moved) if m < 0.01) == 9
    assert not plateaued(plateau[:3], 3, 0.01)  # not enough history
    # a bump: the window's ends agree within 1% but the curve went up and came back
    bump = [1.29, 1.31, 1.34, 1.325, 1.30]
    assert abs(bump[-1] - bump[-4]) < 0.01 * bump[-4] and not plateaued(bump, 3, 0.01)
    assert plateaued([1.3, 1.304, 1.301, 1.299, 1.302], 3, 0.01)


def test_first_plateau_names_the_step_the_rule_would_stop_at():
    plateau = _ema([4.0, 3.5, 3.2, 3.1, 3.08, 3.07, 3.07, 3.069, 3.07, 3.068])
    steps = [100 * i for i in range(len(plateau))]
    assert first_plateau(steps, plateau, 3, 0.01) == 900  # the 10th evaluation, as above
    assert first_plateau(steps, plateau, 3, 0.2) == 300  # a loose rule fires at the first chance
    assert first_plateau(steps, plateau, 3, 0.2, min_steps=450) == 500
    assert first_plateau(steps, _ema([4.0 - 0.1 * i for i in range(10)]), 3, 0.01) is None


def _fake_results(values):
    it = iter(values)

    def measure(model):
        v = next(it)
        return MIRResult(mir=v, per_layer=[10**v / 2] * 2, layers=[1, 2], alpha=[1.0] * 2,
                         n_vision=[4] * 2, n_text=[4] * 2, outliers_vision=[0] * 2,
                         outliers_text=[0] * 2, centroid_gap=[0.0] * 2, cosine_gap=[0.0] * 2)  # fmt: skip

    return measure


def _setup(tiny_llava, tiny_data):
    model, proc = load_llava(tiny_llava)
    apply_unlock(model, UnlockSpec())
    data = ConversationDataset(caption_conversations(load_split(tiny_data, "train", 12), 2))
    return model, proc, data, PlainCollator(proc, end="eos")


def test_early_stop_inside_training_and_the_curve_files(tiny_llava, tiny_data, tmp_path):
    model, proc, data, collate = _setup(tiny_llava, tiny_data)
    monitor = MIRMonitor(proc, eval_pairs(tiny_data, "test", 4), every=1, patience=2,
                         delta=0.01, out_dir=tmp_path / "mon")  # fmt: skip
    values = [3.0, 2.5, 2.45, 2.44, 2.44, 2.44, 2.44, 2.44, 2.44, 2.44, 2.44]
    monitor.measure = _fake_results(values)
    cfg = TrainConfig(steps=10, batch_size=2, lr=1e-3, log_steps=1, progress=False)
    log, trainer = fit(model, data, collate, cfg, tmp_path / "run", trainer_cls=AlignmentTrainer,
                       callbacks=[monitor])  # fmt: skip
    smoothed = _ema(values)
    expected = next(i for i in range(len(values)) if plateaued(smoothed[: i + 1], 2, 0.01))
    assert monitor.stopped_at == expected == log["steps"] < 10
    assert len([h for h in log["history"] if "loss" in h]) == expected  # loss logs untouched
    saved = json.loads((tmp_path / "mon" / "mir_curve.json").read_text())
    assert [h["step"] for h in saved["history"]] == list(range(expected + 1))
    assert saved["stopped_at"] == expected and saved["rule"]["patience"] == 2
    assert (tmp_path / "mon" / "mir_curve.png").read_bytes()[:4] == b"\x89PNG"
    logged = [h for h in trainer.state.log_history if "mir" in h]
    assert [h["mir"] for h in logged][:3] == [3.0, 2.5, 2.45] and "mir/layer_2" in logged[0]


def test_monitoring_leaves_training_unchanged_and_resumes(tiny_llava, tiny_data, tmp_path):
    cfg = TrainConfig(steps=4, batch_size=2, lr=5e-3, seed=1, save_steps=2, log_steps=1,
                      progress=False)  # fmt: skip

    def run(name, monitor=None, stop=None):
        model, _proc, data, collate = _setup(tiny_llava, tiny_data)
        cbs = [c for c in (monitor, stop) if c is not None]
        log, _ = fit(model, data, collate, cfg, tmp_path / name, trainer_cls=AlignmentTrainer,
                     callbacks=cbs)  # fmt: skip
        return log, model

    plain_log, plain = run("plain")
    _, proc, _, _ = _setup(tiny_llava, tiny_data)
    pairs = eval_pairs(tiny_data, "test", 4)
    mon = MIRMonitor(proc, pairs, every=2, stop=False)
    traced_log, traced = run("traced", mon)
    losses = lambda log: [h["loss"] for h in log["history"] if "loss" in h]  # noqa: E731
    assert losses(traced_log) == losses(plain_log)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                 traced.state_dict().values(), strict=True))  # fmt: skip
    assert [h["step"] for h in mon.history] == [0, 2, 4]
    assert all(math.isfinite(h["mir"]) for h in mon.history)
    # Killed after step 2 and resumed: the history comes back from the checkpoint.
    cut = MIRMonitor(proc, pairs, every=2, stop=False)
    run("cut", cut, StopAfter(2))
    resumed = MIRMonitor(proc, pairs, every=2, stop=False)
    run("cut", resumed)
    assert [h["step"] for h in resumed.history] == [0, 2, 4]
    assert [h["mir"] for h in resumed.history] == [h["mir"] for h in mon.history]


def test_bad_settings():
    with pytest.raises(ConfigError, match="every"):
        MIRMonitor(None, [object()], every=0)
    with pytest.raises(ConfigError, match="patience"):
        MIRMonitor(None, [object()], every=1, delta=2.0)
    with pytest.raises(ConfigError, match="probe set is empty"):
        MIRMonitor(None, [], every=1)
