"""The embedded default: shipped files load through Auto*; build-default is bit-for-bit."""

from __future__ import annotations

import json

import pytest
from modalign_lab.pipeline.build_default import DefaultRecipe, build_default
from transformers import AutoModelForImageTextToText, AutoProcessor

from modalign.assets import default_dir, default_eval_pairs, default_model_path
from modalign.data import Pair
from modalign.train.fit import TrainConfig


def test_shipped_default_loads_like_a_real_checkpoint():
    path = default_model_path()
    model = AutoModelForImageTextToText.from_pretrained(path)
    proc = AutoProcessor.from_pretrained(path)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert proc.tokenizer.image_token_id == model.config.image_token_id
    size = sum(p.stat().st_size for p in default_dir().rglob("*") if p.is_file())
    assert size < 8 * 2**20  # "a few MB"
    build = json.loads((default_dir() / "BUILD.json").read_text())
    pt = build["metrics"]["pretrain"]
    assert pt["test_caption_loss"] < pt["test_caption_loss_fresh_connector"]


def test_shipped_default_mir_is_below_every_fresh_connector():
    """The recorded evidence holds for the shipped bytes: recompute it through the runner."""
    from modalign_lab.probes.mir import fresh_connector_mir, mir_of

    build = json.loads((default_dir() / "BUILD.json").read_text())
    recorded = build["metrics"]["mir"]
    model, proc = (
        AutoModelForImageTextToText.from_pretrained(default_model_path()),
        AutoProcessor.from_pretrained(default_model_path()),
    )
    pairs = default_eval_pairs()
    trained = mir_of(model, proc, pairs)["mir"]
    assert trained == pytest.approx(recorded["trained"], abs=1e-6)
    fresh = fresh_connector_mir(
        model, proc, pairs, range(len(recorded["fresh_connector"]["per_seed"]))
    )
    assert fresh["mir_mean"] == pytest.approx(recorded["fresh_connector"]["mir_mean"], abs=1e-6)
    assert trained < fresh["mir_min"]


def test_shipped_files_match_build_record():
    import hashlib

    build = json.loads((default_dir() / "BUILD.json").read_text())
    assert build["sha256"], "BUILD.json lists no files"
    for rel, digest in build["sha256"].items():
        assert hashlib.sha256((default_dir() / rel).read_bytes()).hexdigest() == digest, rel


def test_default_eval_pairs():
    pairs = default_eval_pairs()
    assert len(pairs) == 100 and all(isinstance(p, Pair) for p in pairs)
    assert pairs[0].image.mode == "RGB" and pairs[0].text_id == 0
    sub = default_eval_pairs(10, seed=1)
    assert [p.text_id for p in sub] == [p.text_id for p in default_eval_pairs(10, seed=1)]
    assert [p.text_id for p in sub] != [p.text_id for p in default_eval_pairs(10, seed=2)]
    assert all(p.text == pairs[p.text_id].text for p in sub)
    with pytest.raises(ValueError, match="n must be"):
        default_eval_pairs(1000)


def test_build_default_is_bit_for_bit(tmp_path, tiny_specs):
    sizes, clip, lm = tiny_specs
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-3, log_steps=1, progress=False)
    recipe = DefaultRecipe(
        sizes=sizes,
        corpus_scenes=30,
        clip=clip,
        lm=lm,
        clip_train=cfg,
        lm_train=cfg,
        pretrain_train=cfg,
        image_size=64,
        eval_images=5,
        mir_every=1,
        fresh_seeds=2,
    )
    a = build_default(tmp_path / "w1", tmp_path / "a", recipe)
    b = build_default(tmp_path / "w2", tmp_path / "b", recipe)
    assert a["sha256"] == b["sha256"]
    assert a["metrics"]["mir"] == b["metrics"]["mir"]
    assert [t["step"] for t in a["metrics"]["pretrain"]["mir_trace"]] == [0, 1, 2]
    assert len(a["metrics"]["mir"]["fresh_connector"]["per_seed"]) == 2
    assert (
        "model/model.safetensors" in a["sha256"]
        and len(list((tmp_path / "a" / "eval" / "images").iterdir())) == 5
    )
