"""AlignmentTrainer: objectives in the loss and the logs, exact kill-and-resume, plain-loop parity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.conversations import caption_conversations
from modalign_lab.world.dataset import load_split

from modalign.data.conversations import ConversationDataset
from modalign.errors import DataError
from modalign.methods.objectives import ForwardContext, Objective
from modalign.methods.objectives.modality_gap import ModalityGapObjective
from modalign.models.collate import PlainCollator
from modalign.testing.callbacks import StopAfter
from modalign.train.fit import TrainConfig, fit
from modalign.train.loss import compute_loss
from modalign.train.trainer import AlignmentTrainer
from modalign.train.unlock import UnlockSpec, apply_unlock


class LearnedScale(Objective):
    """Test objective with a learnable parameter and an after-step clamp (like a temperature)."""

    name = "learned_scale"
    needs_connector_output = True

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__(weight)
        self.log_scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:
        ctx.require_vision(self.name)
        energy = ctx.connector_output.pow(2).mean()
        return {"energy": self.log_scale.exp() * energy, "prior": self.log_scale.pow(2)}

    def after_optimizer_step(self) -> None:
        with torch.no_grad():
            self.log_scale.clamp_(-0.05, 0.05)

    def extra_logs(self) -> dict[str, float]:
        return {"scale": float(self.log_scale.detach().exp())}


CFG = TrainConfig(steps=6, batch_size=4, lr=5e-3, seed=3, save_steps=3, log_steps=1, progress=False)


def _setup(tiny_llava, tiny_data):
    model, proc = load_llava(tiny_llava)
    apply_unlock(model, UnlockSpec())  # LLaVA stage 1: connector only
    data = ConversationDataset(caption_conversations(load_split(tiny_data, "train", 12), 2))
    return model, data, PlainCollator(proc, end="eos")


def _run(tiny_llava, tiny_data, run_dir, **kwargs):
    model, data, collate = _setup(tiny_llava, tiny_data)
    objective = LearnedScale()
    log, _trainer = fit(model, data, collate, CFG, run_dir, trainer_cls=AlignmentTrainer,
                       trainer_kwargs={"objectives": [objective]}, **kwargs)  # fmt: skip
    return log, model, objective


def _losses(log):
    return [(h["step"], h["loss"]) for h in log["history"] if "loss" in h]


def test_killed_run_resumes_bit_for_bit_objectives_included(tiny_llava, tiny_data, tmp_path):
    full, model_full, obj_full = _run(tiny_llava, tiny_data, tmp_path / "full")
    cut, _, obj_cut = _run(tiny_llava, tiny_data, tmp_path / "cut", callbacks=[StopAfter(3)])
    assert cut["steps"] == 3 and (tmp_path / "cut" / "checkpoints" / "checkpoint-3").is_dir()
    assert not torch.equal(obj_cut.log_scale, obj_full.log_scale)
    # A new process starts from a freshly built model and objective: the checkpoint restores all.
    resumed, model, objective = _run(tiny_llava, tiny_data, tmp_path / "cut")
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["steps"] == 6
    assert _losses(resumed)[-3:] == _losses(full)[-3:]
    assert torch.equal(objective.log_scale, obj_full.log_scale)
    ref = model_full.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    # the reported loss is the mean over all 6 steps, as the uninterrupted run's
    assert resumed["train_loss"] == full["train_loss"]
    assert full["train_loss"] == pytest.approx(sum(x for _, x in _losses(full)) / 6, rel=1e-6)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tiny_llava, tiny_data, tmp_path):
    """A kill while writing leaves an incomplete newest checkpoint: the run resumes from the last
    whole one (and says so), instead of a traceback or refusing to resume."""
    _, model_full, _ = _run(tiny_llava, tiny_data, tmp_path / "full")
    cfg = replace(CFG, save_steps=1)
    for damage in ("state", "optimizer"):
        run = tmp_path / damage
        model, data, collate = _setup(tiny_llava, tiny_data)
        fit(model, data, collate, cfg, run, trainer_cls=AlignmentTrainer,
            trainer_kwargs={"objectives": [LearnedScale()]}, callbacks=[StopAfter(3)])  # fmt: skip
        newest = run / "checkpoints" / "checkpoint-3"
        if damage == "state":
            (newest / "trainer_state.json").unlink()
        else:
            data_ = (newest / "optimizer.pt").read_bytes()
            (newest / "optimizer.pt").write_bytes(data_[: len(data_) // 2])
        model, data, collate = _setup(tiny_llava, tiny_data)
        with pytest.warns(UserWarning, match="skipping .*checkpoint-3"):
            log, _ = fit(model, data, collate, cfg, run, trainer_cls=AlignmentTrainer,
                         trainer_kwargs={"objectives": [LearnedScale()]})  # fmt: skip
        assert log["resumed_from"].endswith("checkpoint-2") and log["steps"] == 6
        ref = model_full.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_every_term_is_logged_and_the_objective_trains(tiny_llava, tiny_data, tmp_path):
    log, _model, objective = _run(tiny_llava, tiny_data, tmp_path / "r")
    steps = [h for h in log["history"] if "loss" in h]
    assert len(steps) == 6
    for h in steps:
        assert {"loss/lm", "loss/learned_scale/energy", "loss/learned_scale/prior"} <= set(h)
        assert h["learned_scale/scale"] == pytest.approx(
            np.exp(float(objective.log_scale)), abs=0.2
        )
    # The clamp ran after every step, and the parameter moved.
    assert abs(float(objective.log_scale)) <= 0.05 and float(objective.log_scale) != 0
    # The total is the LM loss plus the weighted terms (no gradient accumulation here).
    h = steps[0]
    parts = h["loss/lm"] + 0.5 * (h["loss/learned_scale/energy"] + h["loss/learned_scale/prior"])
    assert h["loss"] == pytest.approx(parts, rel=1e-4)


def test_plain_loop_uses_the_same_loss(tiny_llava, tiny_data):
    model, data, collate = _setup(tiny_llava, tiny_data)
    objective = LearnedScale()
    batch = collate([data[i] for i in range(4)])
    result = compute_loss(model, batch, [objective])
    lm = model(**batch).loss
    terms = result.terms
    assert torch.allclose(terms["lm"], lm)
    expected = lm + 0.5 * (terms["learned_scale/energy"] + terms["learned_scale/prior"])
    assert torch.allclose(result.loss, expected)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([*[p for p in model.parameters() if p.requires_grad],
                             *objective.parameters()], lr=1e-2)  # fmt: skip
    result.loss.backward()
    assert objective.log_scale.grad is not None and objective.log_scale.grad != 0
    connector = model.model.multi_modal_projector
    assert all(p.grad is not None for p in connector.parameters())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_objective_needing_images_refuses_a_text_only_batch(tiny_llava, tiny_data):
    model, data, collate = _setup(tiny_llava, tiny_data)
    batch = collate([data[0]])
    text_only = {k: v for k, v in batch.items() if k != "pixel_values"}
    image_id = model.config.image_token_id
    text_only["input_ids"] = text_only["input_ids"].masked_fill(
        text_only["input_ids"] == image_id, 5
    )
    with pytest.raises(DataError, match="needs image tokens"):
        compute_loss(model, text_only, [ModalityGapObjective()])


def _mfid_reference(hidden, attention, vision):
    """float64 NumPy transcription of the official `mfid_loss` (modeling_llama.py, MIR repo)."""

    def replace(x):
        norms = np.linalg.norm(x, axis=1)
        med = np.sort(norms)[(len(norms) - 1) // 2]
        out = np.abs(norms - med) > 3 * norms.std(ddof=1)
        x = x.copy()
        x[out] = np.sort(x, axis=0)[(len(x) - 1) // 2]
        return x

    total = 0.0
    for latent in hidden[1:]:
        vis, txt = [], []
        for h, a, m in zip(latent, attention, vision, strict=True):
            if m.sum() < 1:
                continue
            h, m = h[a.astype(bool)], m[a.astype(bool)]
            vis.append(h[m])
            txt.append(h[1 + np.where(m)[0][-1] :])
        v, t = np.concatenate(vis), np.concatenate(txt)
        scale = 1.0 / np.linalg.norm(t, axis=1).mean()
        v, t = replace(v * scale), replace(t * scale)
        gap = ((v.mean(0) - t.mean(0)) ** 2).sum()
        total += gap + np.trace(np.cov(v, rowvar=False)) + np.trace(np.cov(t, rowvar=False))
    return total / (len(hidden) - 1)


def test_mfid_equals_the_official_loss():
    g = torch.Generator().manual_seed(0)
    B, T, D, K = 3, 40, 6, 3
    hidden = tuple(
        torch.randn(B, T, D, generator=g, dtype=torch.float64) * (k + 1) for k in range(K + 1)
    )
    vision = torch.zeros(B, T, dtype=torch.bool)
    vision[:, 2:12] = True
    vision[2] = False  # a row without an image contributes nothing
    attention = torch.ones(B, T, dtype=torch.long)
    attention[1, 30:] = 0  # padding
    hidden[2][0, 20] *= 50  # an outlier text token
    ctx = ForwardContext(
        model=None, inputs={"attention_mask": attention},
        outputs=type("O", (), {"hidden_states": hidden})(), connector_output=None,
        vision_mask=vision, extras={},
    )  # fmt: skip
    got = float(ModalityGapObjective()(ctx)["mfid"])
    ref = _mfid_reference([h.numpy() for h in hidden], attention.numpy(), vision.numpy())
    assert got == pytest.approx(ref, rel=1e-6)


def test_component_learning_rates_reach_the_optimizer(tiny_llava, tiny_data, tmp_path):
    model, data, collate = _setup(tiny_llava, tiny_data)
    cfg = TrainConfig(steps=1, batch_size=2, lr=1e-3, log_steps=1, progress=False)
    _, trainer = fit(model, data, collate, cfg, tmp_path, trainer_cls=AlignmentTrainer,
                     trainer_kwargs={"objectives": [LearnedScale()], "objective_lr": 7e-4,
                                     "component_lrs": {"connector": 3e-4}})  # fmt: skip
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"connector", "connector/no_decay", "objectives"}
    assert groups["connector"]["initial_lr"] == 3e-4 and groups["objectives"]["initial_lr"] == 7e-4


def test_a_run_shorter_than_its_logging_interval_logs_its_last_step(
    tiny_llava, tiny_data, tmp_path
):
    model, data, collate = _setup(tiny_llava, tiny_data)
    cfg = replace(CFG, steps=3, log_steps=25, save_steps=0)
    log, _ = fit(model, data, collate, cfg, tmp_path / "short", trainer_cls=AlignmentTrainer,
                 trainer_kwargs={"objectives": [LearnedScale()]})  # fmt: skip
    assert [h["step"] for h in log["history"] if "loss" in h] == [3]
