"""Assembly into a real LLaVA: Auto* loading, image-token expansion, collators == processor."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel, LlamaForCausalLM

from modalign.lab.collators import IGNORE, CaptionCollator, ChatCollator, SFTCollator
from modalign.lab.io import load_llava, num_image_tokens
from modalign.lab.llava import assemble_llava, build_processor, reset_connector, save_llava
from modalign.lab.samples import CaptionDataset, ChatDataset, ImageQA, VQADataset
from modalign.lab.stages import load_tokenizer
from modalign.lab.world.dataset import load_split


@pytest.fixture(scope="module")
def saved(tiny_data, tiny_towers, tmp_path_factory):
    clip_dir, lm_dir = tiny_towers
    tok = load_tokenizer(tiny_data)
    clip = CLIPModel.from_pretrained(clip_dir / "model")
    lm = LlamaForCausalLM.from_pretrained(lm_dir / "model")
    model = assemble_llava(clip, lm, tok, seed=0)
    proc = build_processor(
        tok, clip.config.vision_config.image_size, clip.config.vision_config.patch_size
    )
    out = save_llava(model, proc, tmp_path_factory.mktemp("llava"))
    return out, model, clip, lm


def test_auto_classes_load_the_saved_model(saved):
    out, model, clip, lm = saved
    assert (out / "model.safetensors").is_file()
    loaded = AutoModelForImageTextToText.from_pretrained(out)
    proc = AutoProcessor.from_pretrained(out)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    # The towers are the trained ones, untouched.
    vt = loaded.model.vision_tower.state_dict()
    assert all(torch.equal(v, vt[k]) for k, v in clip.vision_model.state_dict().items())
    assert torch.equal(loaded.lm_head.weight, lm.lm_head.weight)
    assert num_image_tokens(proc) == (64 // 16) ** 2


def test_processor_expansion_matches_vision_features(saved, tiny_data):
    out = saved[0]
    model, proc = load_llava(out)
    rec = load_split(tiny_data, "test", 1)[0]
    batch = proc(
        images=[rec.load_image()],
        text=[proc.tokenizer.image_token + " " + rec.captions[0]],
        return_tensors="pt",
    )
    n_img = int((batch["input_ids"] == model.config.image_token_id).sum())
    with torch.no_grad():
        feats = model.model.get_image_features(batch["pixel_values"]).pooler_output
        logits = model(**batch).logits
    assert n_img == feats[0].shape[0] == num_image_tokens(proc)
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_collators_build_what_the_processor_builds(saved, tiny_data):
    _, proc = load_llava(saved[0])
    recs = load_split(tiny_data, "test", 2)
    n = num_image_tokens(proc)
    sft = SFTCollator(proc.tokenizer, proc.image_processor, n)
    item = VQADataset(recs)[0]
    ref = proc(images=[item.image], text=[sft.prompt(item.question)], return_tensors="pt")
    mine = sft([item])
    k = ref["input_ids"].shape[1]
    assert torch.equal(mine["input_ids"][0, :k], ref["input_ids"][0])
    assert torch.equal(mine["pixel_values"], ref["pixel_values"])
    answer = proc.tokenizer.decode(
        mine["labels"][0][mine["labels"][0] != IGNORE], skip_special_tokens=True
    )
    assert answer == item.answer and (mine["labels"][0, :k] == IGNORE).all()
    cap = CaptionCollator(proc.tokenizer, proc.image_processor, n)
    it = CaptionDataset(recs, 2)[0]
    ref = proc(images=[it.image], text=[proc.tokenizer.image_token + it.text], return_tensors="pt")
    mine = cap([it])
    assert torch.equal(mine["input_ids"][0, :-1], ref["input_ids"][0])
    assert mine["input_ids"][0, -1] == proc.tokenizer.eos_token_id


def test_reset_connector_is_seeded(saved):
    model = saved[1]
    reset_connector(model, 11)
    a = model.model.multi_modal_projector.linear_1.weight.clone()
    reset_connector(model, 12)
    b = model.model.multi_modal_projector.linear_1.weight.clone()
    reset_connector(model, 11)
    assert torch.equal(a, model.model.multi_modal_projector.linear_1.weight) and not torch.equal(
        a, b
    )


def test_load_llava_rejects_non_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved model"):
        load_llava(tmp_path)


def test_multi_turn_chat_targets_only_the_answers(saved, tiny_data):
    _, proc = load_llava(saved[0])
    tok = proc.tokenizer
    n = num_image_tokens(proc)
    recs = load_split(tiny_data, "train", 3)
    chat = ChatDataset(recs, seed=0)[0]
    assert len(chat.turns) == len(recs[0].vqa) >= 5
    assert sorted(chat.turns) == sorted((q.question, q.answer) for q in recs[0].vqa)
    batch = ChatCollator(tok, proc.image_processor, n)([chat, ChatDataset(recs, seed=0)[1]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    assert int((ids == tok.image_token_id).sum()) == n
    targets = labels[labels != IGNORE].tolist()
    expected = [
        t
        for _, a in chat.turns
        for t in [*tok(" " + a, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    ]
    assert targets == expected
    # The first turn is exactly the single-turn SFT sample.
    q, a = chat.turns[0]
    single = SFTCollator(tok, proc.image_processor, n)([ImageQA(chat.image, q, a, "x")])
    k = single["input_ids"].shape[1]
    assert torch.equal(single["input_ids"][0], ids[:k]) and torch.equal(
        single["labels"][0], labels[:k]
    )
    # Seeded order: same seed same order, another seed (usually) another.
    assert ChatDataset(recs, seed=0)[0].turns == chat.turns


def test_fresh_connector_mir_restores_the_trained_connector(saved, tiny_data):
    from modalign.lab.mir import eval_pairs, fresh_connector_mir, mir_of

    out, _, _, _ = saved
    model, proc = load_llava(out)
    pairs = eval_pairs(tiny_data, "test", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = fresh_connector_mir(model, proc, pairs, [3, 4])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    reset_connector(model, 4)
    assert report["per_seed"][1]["mir"] == mir_of(model, proc, pairs)["mir"]
    assert report["mir_max"] >= report["mir_mean"] >= report["mir_min"]
    with pytest.raises(ValueError, match="at least one seed"):
        fresh_connector_mir(model, proc, pairs, [])
