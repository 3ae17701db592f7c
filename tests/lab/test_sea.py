"""SEA in the lab: a LiT text tower on the LLaVA's own vision tower, labels with the better sign."""

from __future__ import annotations

import json

import pytest
import torch
from modalign_lab.pipeline.sea import label_accuracy, lit_clip, sea_labels
from modalign_lab.probes.recall import cell_truth, recall_accuracy
from modalign_lab.towers.llava import load_llava
from modalign_lab.world.dataset import load_split
from transformers import CLIPModel

from modalign.methods.sea.label_cache import LabelCache
from modalign.train.fit import TrainConfig


def test_lit_tower_labels_and_their_accuracy(tiny_llava, tiny_data, tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, lr=1e-3, log_steps=1, progress=False)
    clip_dir = lit_clip(tiny_data, tiny_llava, tmp_path / "clip", cfg)
    clip = CLIPModel.from_pretrained(clip_dir)
    tower = load_llava(tiny_llava)[0].model.vision_tower
    locked = getattr(tower, "vision_model", tower).state_dict()
    assert all(torch.equal(v, locked[k]) for k, v in clip.vision_model.state_dict().items())
    assert json.loads((tmp_path / "clip" / "metrics.json").read_text())["locked_vision"] is True
    choice = sea_labels(tiny_data, clip_dir, tmp_path / "labels", top_n=3)
    assert choice["sign"] in (-1.0, 1.0) and set(choice["val_top1_label_accuracy"]) == {"-1", "+1"}
    best = choice["val_top1_label_accuracy"][f"{choice['sign']:+.0f}"]
    assert best == max(choice["val_top1_label_accuracy"].values())
    cache = LabelCache.load(choice["labels"])
    train = load_split(tiny_data, "train")
    assert len(cache.indices) == len(train) and cache.manifest["sign"] == choice["sign"]
    # label_accuracy counts exactly: recount by hand.
    hits = total = 0
    for r in train:
        idx, _ = cache.labels(r.image_path.relative_to(tiny_data).as_posix())
        for cell, content in cell_truth(r).items():
            total += 1
            word = cache.words[int(idx[cell, 0])] if int(idx[cell, 0]) >= 0 else None
            hits += word in content.values()
    assert label_accuracy(cache, tiny_data, train) == hits / total


def test_recall_accuracy_is_a_fraction_of_occupied_cells(tiny_llava, tiny_data):
    model, proc = load_llava(tiny_llava)
    records = load_split(tiny_data, "test", 4)
    report = recall_accuracy(model, proc, records)
    assert report["cells"] == sum(len(cell_truth(r)) for r in records)
    assert 0 <= report["accuracy"] <= 1 and set(report["by_kind"]) <= {"colour", "shape", "glyph"}


def test_recall_trace_needs_records(tiny_llava):
    from modalign_lab.probes.recall import RecallTrace

    from modalign.errors import DataError

    _, proc = load_llava(tiny_llava)
    with pytest.raises(DataError, match="no records"):
        RecallTrace(proc, [], every=10)


def test_oracle_labels_name_each_cell_content(tiny_data, tmp_path):
    from modalign_lab.pipeline.sea import oracle_labels
    from modalign_lab.world.vocab import label_words

    folder = oracle_labels(tiny_data, tmp_path / "oracle")
    cache = LabelCache.load(folder, words=label_words())
    train = load_split(tiny_data, "train")
    assert cache.grid == 3 and cache.manifest["model"] == "oracle:world-truth"
    assert label_accuracy(cache, tiny_data, train) == 1.0  # every occupied cell's top label
    for r in train:
        idx, scores = cache.labels(r.image_path.relative_to(tiny_data).as_posix())
        truth = cell_truth(r)
        for cell in range(9):
            named = {cache.words[int(i)] for i in idx[cell] if int(i) >= 0}
            assert named == set(truth.get(cell, {}).values())
        assert torch.equal(scores > 0, idx >= 0)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert oracle_labels(tiny_data, folder) == folder  # made once
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp


def test_save_label_cache_refuses_bad_labels(tmp_path):
    from modalign.errors import ConfigError
    from modalign.methods.sea.labels import save_label_cache

    good = torch.zeros(4, 2, dtype=torch.int32)
    with pytest.raises(ConfigError, match="no images"):
        save_label_cache(tmp_path / "a", ["w"], 2, [], source="x")
    with pytest.raises(ConfigError, match="patches"):
        save_label_cache(tmp_path / "b", ["w"], 3, [("i", good, good.float())], source="x")
    with pytest.raises(ConfigError, match="word indices"):
        save_label_cache(tmp_path / "c", ["w"], 2, [("i", good + 1, good.float())], source="x")
    with pytest.raises(ConfigError, match="shapes"):
        save_label_cache(tmp_path / "d", ["w"], 2, [("i", good, torch.zeros(4, 3))], source="x")
    cache = save_label_cache(tmp_path / "e", ["w"], 2, [("i", good, good.float())], source="x")
    assert cache.labels("i")[0].tolist() == good.tolist()
