"""No output may land on what a run reads: a passages file given as `--json`, a plot inside the
image folder, a training run folder holding its own base model or data. Each is one line and
exit 2, with the inputs untouched and nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from modalign.cli import main


@pytest.fixture
def probe(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(images / f"{i}.png")
    texts = tmp_path / "passages.txt"
    texts.write_text("a red square\na dark square\na black square\n")
    return images, texts


def _refused(argv, capsys, what):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "would overwrite an input" in err and what in err and err.count("\n") == 1, err


def test_mir_outputs_never_replace_their_inputs(probe, tmp_path, capsys):
    images, texts = probe
    before = texts.read_bytes()
    base = [
        "mir",
        "--model",
        "llava-hf/never-loaded",
        "--images",
        str(images),
        "--texts",
        str(texts),
    ]
    _refused([*base, "--json", str(texts), "--n", "2"], capsys, "--json")
    _refused([*base, "--plot", str(images / "gap.png")], capsys, "--plot")
    assert texts.read_bytes() == before and sorted(p.name for p in images.iterdir()) == [
        "0.png", "1.png", "2.png"]  # fmt: skip
    assert (
        main([*base, "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.json")]) == 2
    )
    assert "same file" in capsys.readouterr().err
    run = tmp_path / "run.json"
    run.write_text("{}")
    _refused(["mir", "compare", str(run), str(run), "--plot", str(run)], capsys, "--plot")
    assert run.read_text() == "{}"


def test_train_out_may_not_hold_its_model_or_data(tiny_llava, tiny_data, tmp_path, capsys):
    model = tmp_path / "runs" / "pt" / "model"
    shutil.copytree(tiny_llava, model)
    data = tiny_data / "llava" / "pretrain_level2.json"
    argv = ["train", "--model", str(model), "--data", str(data), "--image-folder", str(tiny_data),
            "--steps", "1", "--quiet"]  # fmt: skip
    _refused([*argv, "--out", str(tmp_path / "runs" / "pt")], capsys, "--out")
    _refused([*argv, "--out", str(tiny_data / "run")], capsys, "--out")  # inside the image folder
    assert sorted(p.name for p in (tmp_path / "runs" / "pt").iterdir()) == ["model"]


def test_validate_out_may_not_hold_a_checkpoint(tiny_llava, probe, tmp_path, capsys):
    images, texts = probe
    models = [tmp_path / f"ck{i}" for i in range(3)]
    for m in models:
        shutil.copytree(tiny_llava, m)
    listing = tmp_path / "cks.jsonl"
    listing.write_text(
        "\n".join(json.dumps({"model": str(m), "score": i}) for i, m in enumerate(models))
    )
    argv = ["validate", "--checkpoints", str(listing), "--images", str(images), "--texts",
            str(texts), "--out", str(models[1])]  # fmt: skip
    _refused(argv, capsys, "--out")
    assert not (models[1] / "validate.json").exists()
