"""Assembly into a real LLaVA: Auto* loading, image-token expansion, connector reset, MIR baseline."""

from __future__ import annotations

import pytest
import torch
from modalign_lab.towers.llava import load_llava, reset_connector
from modalign_lab.world.dataset import load_split
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel, LlamaForCausalLM

from modalign.errors import DataError
from modalign.models.collate import image_token_count


def test_auto_classes_load_the_saved_model(tiny_llava, tiny_towers):
    clip_dir, lm_dir = tiny_towers
    assert (tiny_llava / "model.safetensors").is_file()
    loaded = AutoModelForImageTextToText.from_pretrained(tiny_llava)
    proc = AutoProcessor.from_pretrained(tiny_llava)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    model, _ = load_llava(tiny_llava)
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    # The towers are the trained ones, untouched.
    clip = CLIPModel.from_pretrained(clip_dir / "model")
    vt = loaded.model.vision_tower.state_dict()
    assert all(torch.equal(v, vt[k]) for k, v in clip.vision_model.state_dict().items())
    lm = LlamaForCausalLM.from_pretrained(lm_dir / "model")
    assert torch.equal(loaded.lm_head.weight, lm.lm_head.weight)
    assert image_token_count(proc) == (64 // 16) ** 2


def test_processor_expansion_matches_vision_features(tiny_llava, tiny_data):
    model, proc = load_llava(tiny_llava)
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
    assert n_img == feats[0].shape[0] == image_token_count(proc)
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_reset_connector_is_seeded_for_hf_and_registered_connectors(tiny_llava):
    from modalign.models.surgery.connector_llava import swap_connector

    model, proc = load_llava(tiny_llava)
    swapped, _ = swap_connector(model, proc, "mlp2x_gelu", seed=0)
    for m, weight in ((model, lambda m: m.model.multi_modal_projector.linear_1.weight),
                      (swapped, lambda m: m.model.multi_modal_projector[0].weight)):  # fmt: skip
        reset_connector(m, 11)
        a = weight(m).clone()
        reset_connector(m, 12)
        b = weight(m).clone()
        reset_connector(m, 11)
        assert torch.equal(a, weight(m)) and not torch.equal(a, b)


def test_load_llava_rejects_non_model_dir(tmp_path):
    with pytest.raises(DataError, match="not a saved model"):
        load_llava(tmp_path)


def test_fresh_connector_mir_restores_the_trained_connector(tiny_llava, tiny_data):
    from modalign_lab.probes.mir import eval_pairs, fresh_connector_mir, mir_of

    model, proc = load_llava(tiny_llava)
    pairs = eval_pairs(tiny_data, "test", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = fresh_connector_mir(model, proc, pairs, [3, 4])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    reset_connector(model, 4)
    assert report["per_seed"][1]["mir"] == mir_of(model, proc, pairs)["mir"]
    assert report["mir_max"] >= report["mir_mean"] >= report["mir_min"]
    with pytest.raises(ValueError, match="at least one seed"):
        fresh_connector_mir(model, proc, pairs, [])
