"""`modalign lab ...` wiring: argument checks, a tiny data + eval run through the CLI."""

from __future__ import annotations

import json

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
    ]
    assert main(args) == 0
    capsys.readouterr()
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
    assert "pretrain needs --clip" in capsys.readouterr().err
    assert main(["lab", "eval", "--data", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "not a saved model" in capsys.readouterr().err
