"""The lab's LLaVA stages on the one training path: stage chain, seeded reproducibility."""

from __future__ import annotations

import json
from dataclasses import replace

import torch
from modalign_lab.pipeline.cycle import lab_recipe
from modalign_lab.pipeline.stages import evaluate, pretrain, sft
from modalign_lab.probes.recall import recall_accuracy
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.dataset import load_split
from transformers import LlamaForCausalLM

from modalign.train.fit import TrainConfig
from modalign.train.recipe import MonitorSettings

CFG = TrainConfig(steps=3, batch_size=4, lr=1e-2, log_steps=1, progress=False)


def test_stage_chain_pretrain_sft_evaluate(tiny_data, tiny_towers, tmp_path):
    clip_dir, lm_dir = tiny_towers
    recipe = replace(lab_recipe("pretrain", CFG), monitor=MonitorSettings(every=2, stop=False, n=4))
    m = pretrain(tiny_data, tmp_path / "pt", recipe, clip=clip_dir, lm=lm_dir, level=1, limit=8)
    trained, proc = load_llava(tmp_path / "pt" / "model")
    # MIR and recalled-word traces at steps 0, 2 and the last; the last is the saved model's
    assert (
        [h["step"] for h in m["mir_trace"]] == [h["step"] for h in m["recall_trace"]] == [0, 2, 3]
    )
    last = recall_accuracy(trained, proc, load_split(tiny_data, "test", 8)[:4])
    assert m["recall_trace"][-1]["accuracy"] == last["accuracy"]
    assert m["recall_trace"][-1]["by_kind"] == last["by_kind"]
    n_connector = sum(p.numel() for p in trained.model.multi_modal_projector.parameters())
    assert m["trainable_params"]["connector"] == n_connector
    assert sum(m["trainable_params"].values()) == n_connector  # LLaVA stage 1: connector only
    assert m["test_caption_loss"] < m["test_caption_loss_fresh_connector"]
    assert json.loads((tmp_path / "pt" / "metrics.json").read_text())["caption_level"] == 1
    # Connector-only: the LM weights are those of the LM stage.
    lm = LlamaForCausalLM.from_pretrained(lm_dir / "model")
    assert torch.equal(trained.lm_head.weight, lm.lm_head.weight)
    s = sft(tiny_data, tmp_path / "pt", tmp_path / "sft", lab_recipe("sft", CFG), limit=8)
    assert s["trainable_params"]["llm"] > 0 and s["multi_turn"]
    report = evaluate(tmp_path / "sft", tiny_data, "test", level=1, limit=4)
    assert report["caption_loss"] > 0
    assert set(report["vqa"]) >= {"colour", "count", "existence", "all"}
    assert 0 <= report["vqa"]["all"]["accuracy"] <= 1


def test_same_seed_same_model(tiny_data, tiny_towers, tmp_path):
    clip_dir, lm_dir = tiny_towers
    states = []
    for name in ("a", "b"):
        pretrain(tiny_data, tmp_path / name, lab_recipe("pretrain", CFG), clip=clip_dir, lm=lm_dir,
                 limit=8)  # fmt: skip
        states.append(load_llava(tmp_path / name / "model")[0].state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
