"""Training stages: seeded reproducibility, kill/resume equivalence, the end-to-end stage chain."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPModel, LlamaForCausalLM

from modalign.lab.collators import SFTCollator
from modalign.lab.io import num_image_tokens
from modalign.lab.llava import assemble_llava, build_processor
from modalign.lab.samples import VQADataset
from modalign.lab.stages import _set_trainable, evaluate, load_tokenizer, pretrain, sft
from modalign.lab.trainer import TrainConfig, train
from modalign.lab.world.dataset import load_split


def _setup(tiny_data, tiny_towers):
    """A fresh tiny LLaVA (fixed seed), its SFT dataset and collator."""
    clip_dir, lm_dir = tiny_towers
    tok = load_tokenizer(tiny_data)
    clip = CLIPModel.from_pretrained(clip_dir / "model")
    model = assemble_llava(clip, LlamaForCausalLM.from_pretrained(lm_dir / "model"), tok, seed=0)
    proc = build_processor(tok, 64, clip.config.vision_config.patch_size)
    _set_trainable(model, ("multi_modal_projector", "language_model", "lm_head"))
    collate = SFTCollator(tok, proc.image_processor, num_image_tokens(proc))
    return model, VQADataset(load_split(tiny_data, "train", 6)), collate


CFG = TrainConfig(steps=6, batch_size=4, lr=3e-3, seed=5, save_steps=3, log_steps=1, progress=False)


def _losses(log):
    return [(h["step"], h["loss"]) for h in log["history"]]


def test_same_seed_same_numbers(tiny_data, tiny_towers, tmp_path):
    runs = []
    for name in ("a", "b"):
        model, data, collate = _setup(tiny_data, tiny_towers)
        log = train(model, data, collate, CFG, tmp_path / name)
        runs.append((log, model.state_dict()))
    (log_a, sd_a), (log_b, sd_b) = runs
    assert _losses(log_a) == _losses(log_b) and len(_losses(log_a)) == 6
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # Training actually changed the trainable weights.
    fresh, _, _ = _setup(tiny_data, tiny_towers)
    assert not torch.equal(fresh.lm_head.weight, sd_a["lm_head.weight"])


def test_killed_run_resumes_to_identical_result(tiny_data, tiny_towers, tmp_path):
    model, data, collate = _setup(tiny_data, tiny_towers)
    full = train(model, data, collate, CFG, tmp_path / "full")
    ref = model.state_dict()

    model, data, collate = _setup(tiny_data, tiny_towers)
    part = train(model, data, collate, CFG, tmp_path / "cut", stop_at=3)
    assert part["steps"] == 3 and (tmp_path / "cut" / "checkpoints" / "checkpoint-3").is_dir()
    # A new process would start from a freshly built model: the checkpoint must restore everything.
    model, data, collate = _setup(tiny_data, tiny_towers)
    resumed = train(model, data, collate, CFG, tmp_path / "cut")
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["steps"] == 6
    assert _losses(resumed)[-3:] == _losses(full)[-3:]
    got = model.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_stage_chain_pretrain_sft_evaluate(tiny_data, tiny_towers, tmp_path):
    clip_dir, lm_dir = tiny_towers
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, log_steps=1, progress=False)
    m = pretrain(tiny_data, clip_dir, lm_dir, tmp_path / "pt", cfg, level=1, limit=8)
    assert m["trainable_params"] == sum(
        p.numel()
        for n, p in _setup(tiny_data, tiny_towers)[0].named_parameters()
        if "multi_modal_projector" in n
    )
    assert m["test_caption_loss"] < m["test_caption_loss_fresh_connector"]
    saved = json.loads((tmp_path / "pt" / "metrics.json").read_text())
    assert saved["caption_level"] == 1
    # Connector-only: the LM weights are those of the LM stage.
    pt_lm = LlamaForCausalLM.from_pretrained(lm_dir / "model")
    from modalign.lab.io import load_llava

    pt_model, _ = load_llava(tmp_path / "pt" / "model")
    assert torch.equal(pt_model.lm_head.weight, pt_lm.lm_head.weight)
    sft(tiny_data, tmp_path / "pt", tmp_path / "sft", cfg, limit=8)
    report = evaluate(tmp_path / "sft", tiny_data, "test", level=1, limit=4)
    assert report["caption_loss"] > 0
    assert set(report["vqa"]) >= {"colour", "count", "existence", "all"}
    assert 0 <= report["vqa"]["all"]["accuracy"] <= 1


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(steps=0, batch_size=4, lr=1e-3)


def test_mir_trace_leaves_training_unchanged(tiny_data, tiny_towers, tmp_path):
    from modalign.lab.mir import MIRTrace, eval_pairs

    model, data, collate = _setup(tiny_data, tiny_towers)
    plain = train(model, data, collate, CFG, tmp_path / "plain")
    ref = model.state_dict()
    model, data, collate = _setup(tiny_data, tiny_towers)
    tok = load_tokenizer(tiny_data)
    proc = build_processor(tok, 64, model.config.vision_config.patch_size)
    trace = MIRTrace(proc, eval_pairs(tiny_data, "test", 4), every=2)
    traced = train(model, data, collate, CFG, tmp_path / "traced", callbacks=[trace])
    assert _losses(traced) == _losses(plain)
    got = model.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert [h["step"] for h in trace.history] == [0, 2, 4, 6]
    assert len({h["mir"] for h in trace.history}) == 4  # SFT moves the connector and the LM
    with pytest.raises(ValueError, match="positive"):
        MIRTrace(proc, eval_pairs(tiny_data, "test", 4), every=0)
