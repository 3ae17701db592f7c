"""Stages end to end: LoRA merged or kept after the stage, MoCa through a connector swap,
finished stages not redone, settings checked before any work."""

from __future__ import annotations

import pytest
import torch
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.conversations import caption_conversations
from modalign_lab.world.dataset import load_split

from modalign.errors import ConfigError
from modalign.methods.lora import LoraSpec, has_lora
from modalign.methods.moca import get_moca
from modalign.methods.objectives import ObjectiveSpec
from modalign.train import Recipe, prepare
from modalign.train.fit import TrainConfig
from modalign.train.stage import Stage, run_stage
from modalign.train.unlock import UnlockSpec

CFG = TrainConfig(steps=2, batch_size=4, lr=1e-2, log_steps=1, progress=False)


def _convs(tiny_data):
    return caption_conversations(load_split(tiny_data, "train", 8), 2)


@pytest.mark.parametrize("merge", [True, False])
def test_lora_is_merged_or_kept_after_the_stage(tiny_llava, tiny_data, tmp_path, merge):
    model, proc = load_llava(tiny_llava)
    unlock = UnlockSpec(llm="lora", lora=LoraSpec(r=4, alpha=8, merge=merge))
    stage = Stage.defaults("pretrain", unlock=unlock, plain_end="eos")
    summary = run_stage(model, proc, _convs(tiny_data), stage, CFG, tmp_path / "s")
    assert summary["unlock"]["trainable"]["lora"] > 0
    assert bool(summary["lora_merged"]) == merge
    saved, _ = load_llava(tmp_path / "s" / "model")
    assert has_lora(saved) == (not merge) and has_lora(model) == (not merge)
    model.eval()  # no LoRA dropout
    batch_ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(saved.model.language_model(input_ids=batch_ids).last_hidden_state,
                              model.model.language_model(input_ids=batch_ids).last_hidden_state,
                              atol=1e-5)  # fmt: skip
    base, _ = load_llava(tiny_llava)
    layer = "model.language_model.layers.0.self_attn.q_proj"
    if merge:  # the adapters were folded into the weights: the base weight moved
        changed = saved.get_submodule(layer).weight
        assert not torch.equal(changed, base.get_submodule(layer).weight)


def test_moca_is_carried_through_a_connector_swap(tiny_llava):
    model, proc = load_llava(tiny_llava)
    model, proc = prepare(model, proc, Recipe.defaults("pretrain", moca=True))
    with torch.no_grad():
        get_moca(model).shift.fill_(0.25)
    swapped, _ = prepare(model, proc, Recipe.defaults("pretrain", connector="linear"))
    assert get_moca(swapped) is not None and float(get_moca(swapped).shift[0, 0].detach()) == 0.25
    assert get_moca(model) is None  # moved, not shared between two models


def test_a_finished_stage_is_returned_and_other_settings_refused(tiny_llava, tiny_data, tmp_path):
    model, proc = load_llava(tiny_llava)
    stage = Stage.defaults("pretrain", plain_end="eos")
    first = run_stage(model, proc, _convs(tiny_data), stage, CFG, tmp_path / "s")
    model, proc = load_llava(tiny_llava)  # a re-run starts from the same model, loaded again
    again = run_stage(model, proc, _convs(tiny_data), stage, CFG, tmp_path / "s")
    assert again == first
    other = TrainConfig(steps=3, batch_size=4, lr=1e-2, log_steps=1, progress=False)
    with pytest.raises(ConfigError, match=r"other settings \(train\)"):
        run_stage(model, proc, _convs(tiny_data), stage, other, tmp_path / "s")
    with pytest.raises(ConfigError, match="made from other data"):
        run_stage(model, proc, _convs(tiny_data)[:-1], stage, CFG, tmp_path / "s")
    trained, _ = load_llava(tmp_path / "s" / "model")  # the model the stage wrote, not its start
    with pytest.raises(ConfigError, match="made from another model"):
        run_stage(trained, proc, _convs(tiny_data), stage, CFG, tmp_path / "s")


def test_stage_settings_are_checked_first():
    with pytest.raises(ConfigError, match="unknown objective 'nope'"):
        Stage.defaults("pretrain", objectives=(ObjectiveSpec.parse("nope"),))
    with pytest.raises(ConfigError, match="ObjectiveSpec"):
        Stage.defaults("pretrain", objectives=(("mfid", None),))
    with pytest.raises(ConfigError, match=r"has no option.*colour"):
        ObjectiveSpec.parse("mfid:0.1,colour=blue")
    with pytest.raises(ConfigError, match="weight must be a number"):
        ObjectiveSpec.parse("mfid:lots")
    assert ObjectiveSpec.parse("mfid:0.5").build().weight == 0.5
    with pytest.raises(ConfigError, match="stage must be one of"):
        Stage.defaults("finetune")
    with pytest.raises(ConfigError, match="template"):
        Stage.defaults("sft", template="vicuna")


def test_an_interrupted_stage_resumes_only_with_its_own_settings(tiny_llava, tiny_data, tmp_path):
    from transformers import TrainerCallback

    class Killed(TrainerCallback):  # the process dies right after the step-2 checkpoint
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= 2:
                raise KeyboardInterrupt

    model, proc = load_llava(tiny_llava)
    stage = Stage.defaults("pretrain", plain_end="eos")
    cfg = TrainConfig(steps=4, batch_size=4, lr=1e-3, save_steps=1, log_steps=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_stage(model, proc, _convs(tiny_data), stage, cfg, tmp_path / "s",
                  callbacks=[Killed()])  # fmt: skip
    assert (tmp_path / "s" / "stage_settings.json").is_file() and not (
        tmp_path / "s" / "stage.json"
    ).exists()
    other = TrainConfig(steps=2, batch_size=4, lr=1e-3, save_steps=1, log_steps=1, progress=False)
    model, proc = load_llava(tiny_llava)
    with pytest.raises(ConfigError, match="interrupted stage with other settings"):
        run_stage(model, proc, _convs(tiny_data), stage, other, tmp_path / "s")
    summary = run_stage(model, proc, _convs(tiny_data), stage, cfg, tmp_path / "s")
    assert summary["steps"] == 4
