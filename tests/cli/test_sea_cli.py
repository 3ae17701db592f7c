"""`modalign sea-labels`, `modalign recall`, and SEA / contrastive through `modalign train`."""

from __future__ import annotations

import json

from modalign.cli import main
from modalign.methods.sea.label_cache import LabelCache

WORDS = "red\ngreen\nblue\ncircle\nsquare\nstar\ntriangle\nsmall\nlarge\n"


def test_labels_then_train_with_sea_and_contrastive(
    tiny_towers, tiny_llava, tiny_data, tmp_path, capsys
):
    words = tmp_path / "words.txt"
    words.write_text(WORDS)
    cache = tmp_path / "cache"
    data = tiny_data / "llava" / "pretrain_level2.json"
    # The 2-step CLIP gives nearly parallel word features: with -cos most patches keep one
    # label, so a batch of 8 would draw a single distinct one; +cos over all 9 words varies.
    args = ["sea-labels", "--clip", str(tiny_towers[0] / "model"), "--words", str(words),
            "--data", str(data), "--image-folder", str(tiny_data), "--out", str(cache),
            "--top-n", "9", "--sign", "1", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "images," in capsys.readouterr().out
    loaded = LabelCache.load(cache)
    assert len(loaded.indices) == len(json.loads(data.read_text())) and loaded.grid == 4
    assert main(args) == 0  # finished: nothing to redo
    regions = [*args[:10], str(tmp_path / "regions"), "--regions", "2", "--quiet"]
    assert main(regions) == 0
    manifest = json.loads((tmp_path / "regions" / "manifest.json").read_text())
    assert manifest["regions"] == 2 and manifest["sign"] == 1.0  # +cos by default for crops
    assert main([*regions[:-2], "3", "--quiet"]) == 2
    assert "must divide" in capsys.readouterr().err
    common = ["train", "--model", str(tiny_llava), "--data", str(data), "--image-folder",
              str(tiny_data), "--steps", "2", "--batch-size", "8", "--log-steps", "1",
              "--save-steps", "0", "--quiet", "--plain-end", "eos"]  # fmt: skip
    for name, objective in (("sea", f"sea:1,labels={cache},sign=1"), ("sea", f"sea:1,labels={cache}"),
                            ("contrastive", "contrastive:1,prompt=true")):  # fmt: skip
        out = tmp_path / name
        rc = main([*common, "--out", str(out), "--objective", objective])
        err = capsys.readouterr().err
        if "sign=1" in objective:
            assert rc == 2 and "has no option(s) sign" in err
            continue
        assert rc == 0, err
        history = json.loads((out / "train_log.json").read_text())["history"]
        assert all(f"loss/{name}" in h for h in history if "loss" in h)
        assert (out / "objectives.safetensors").is_file()


def test_recall_prints_the_grid_and_plots(tiny_llava, tiny_data, tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text(WORDS)
    png = tmp_path / "grid.png"
    rc = main(["recall", "--model", str(tiny_llava), "--images", str(tiny_data / "test" / "images"),
               "--words", str(words), "--n", "2", "--top-k", "2", "--plot", str(png)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and out.count("(16 image tokens)") == 2 and "mean cosine" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["recall", "--model", str(tiny_llava), "--images", str(tiny_data / "test" / "images"),
                 "--words", str(empty)]) == 2  # fmt: skip
    assert "is empty" in capsys.readouterr().err
