"""`modalign lab ...` wiring: argument checks, a tiny data + eval run through the CLI."""

from __future__ import annotations

import json
import math

from modalign.cli import main


def test_lab_data_then_eval(tmp_path, tiny_data, tiny_towers, capsys):
    out = tmp_path / "d"
    assert (
        main(
            [
                "lab",
                "data",
                "--out",
                str(out),
                "--train",
                "3",
                "--val",
                "2",
                "--test",
                "2",
                "--corpus-scenes",
                "5",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sizes"] == {"train": 3, "val": 2, "test": 2}
    clip_dir, lm_dir = tiny_towers
    pt = tmp_path / "pt"
    args = [
        "lab",
        "pretrain",
        "--data",
        str(tiny_data),
        "--clip",
        str(clip_dir),
        "--lm",
        str(lm_dir),
    ]
    args += [
        "--out",
        str(pt),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--limit",
        "4",
        "--quiet",
        "--level",
        "mixed",
        "--mir-every",
        "1",
    ]
    assert main(args) == 0
    capsys.readouterr()
    trace = json.loads((pt / "metrics.json").read_text())["mir_trace"]
    assert [t["step"] for t in trace] == [0, 1] and all(math.isfinite(t["mir"]) for t in trace)
    report = tmp_path / "r.json"
    assert (
        main(
            [
                "lab",
                "eval",
                "--data",
                str(tiny_data),
                "--model",
                str(pt),
                "--limit",
                "2",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report.read_text()) and "vqa" in printed


def test_lab_errors_are_clean(tmp_path, capsys):
    assert main(["lab", "pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "lab pretrain needs --clip DIR and --lm DIR" in capsys.readouterr().err
    assert main(["lab", "eval", "--data", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "not a saved model" in capsys.readouterr().err


def test_lab_train_clip_defaults_to_one_patch_per_cell_and_hard_negatives(tmp_path, capsys):
    data = tmp_path / "d"
    common = ["--train", "4", "--val", "2", "--test", "1", "--corpus-scenes", "3"]
    assert main(["lab", "data", "--out", str(data), *common]) == 0
    out = tmp_path / "clip"
    args = ["lab", "train-clip", "--data", str(data), "--out", str(out)]
    assert main([*args, "--steps", "1", "--batch-size", "2", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hard_negatives"] is True and 0 <= metrics["val_hard_negative_accuracy"] <= 1
    vision = json.loads((out / "model" / "config.json").read_text())["vision_config"]
    assert (vision["image_size"], vision["patch_size"]) == (96, 32)
    capsys.readouterr()
    # 64 px does not split into 3 x 3 cells: a clear error unless --patch-size is given.
    small = tmp_path / "d64"
    assert main(["lab", "data", "--out", str(small), "--image-size", "64", *common]) == 0
    capsys.readouterr()
    bad = ["lab", "train-clip", "--data", str(small), "--out", str(tmp_path / "c64")]
    assert main([*bad, "--steps", "1", "--batch-size", "2", "--quiet"]) == 2
    assert "not a multiple of patch_size" in capsys.readouterr().err


def test_lab_high_resolution_world_and_vlsa_parts(tmp_path, capsys):
    import pytest

    pytest.importorskip("diffusers")
    data = tmp_path / "d"
    rc = main(["lab", "data", "--out", str(data), "--train", "4", "--val", "2", "--test", "2",
               "--corpus-scenes", "5", "--image-size", "288", "--glyph-scale", "3"])  # fmt: skip
    assert rc == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["image_size"] == 288 and manifest["glyph_scale"] == 3
    capsys.readouterr()
    parts = tmp_path / "parts"
    assert (
        main(["lab", "vlsa-parts", "--data", str(data), "--out", str(parts), "--steps", "1"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    # the VAE encodes the full 288 px image (latent side 288 / 4); the VQ model its 32 px view
    assert printed["vq"]["codes_per_image"] == 16
    assert printed["diffusion"]["latent_shape"] == [4, 72, 72]
    vae = json.loads((parts / "diffusion" / "vae" / "config.json").read_text())
    assert vae["sample_size"] == 288
    assert (parts / "vq" / "config.json").is_file()


def test_lab_cycle_flags_put_cognition_turns_into_sft():
    from modalign_lab.cli import cycle_config

    from modalign.cli import build_parser

    args = build_parser("lab").parse_args(
        [
            "lab",
            "cycle",
            "--out",
            "x",
            "--image-size",
            "288",
            "--glyph-scale",
            "3",
            "--connector",
            "sa_perceiver:grid_rows=3,grid_cols=3",
            "--cognition",
            "pixel",
            "--cognition-p",
            "0.5",
            "--cognition-grid",
            "4",
        ]
    )
    cfg = cycle_config(args)
    assert (cfg.image_size, cfg.glyph_scale) == (288, 3)
    assert cfg.pretrain.connector == "sa_perceiver:grid_rows=3,grid_cols=3"
    assert cfg.pretrain.stage.cognition is None
    spec = cfg.sft.stage.cognition
    assert (spec.kinds, spec.probability, spec.grid) == (("pixel",), 0.5, 4)


def test_lab_legibility_prints_the_probe(tiny_data, tiny_llava, capsys):
    from modalign.assets import default_model_path

    args = ["lab", "legibility", "--data", str(tiny_data), "--train", "24"]
    assert main([*args, "--model", str(default_model_path())]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"chance", "n_train", "n_test", "low_res_cell", "tile"}
    assert main([*args, "--model", str(tiny_llava)]) == 2  # 4 x 4 patches on 3 x 3 cells
    assert "does not tile" in capsys.readouterr().err


def test_lab_legibility_probes_a_vae(tiny_data, tmp_path, capsys):
    from diffusers import AutoencoderKL

    from modalign.assets import default_model_path

    AutoencoderKL(sample_size=96, block_out_channels=(8,), norm_num_groups=4,
                  layers_per_block=1).save_pretrained(tmp_path / "vae")  # fmt: skip
    args = ["lab", "legibility", "--data", str(tiny_data), "--train", "24",
            "--model", str(default_model_path()), "--vae", str(tmp_path / "vae")]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"chance", "n_train", "n_test", "vae_latent_cell", "vae_decoded_tile"}
    assert main([*args, "--connector"]) == 2
    assert "not both" in capsys.readouterr().err
