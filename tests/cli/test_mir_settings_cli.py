"""`modalign mir` settings from flags and `--config`: the preset, explicit flags winning, bad
combinations refused with one line (exit 2, nothing written)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from modalign.cli import main
from modalign.measure.settings import TOKEN_RUN, MIRSettings
from modalign.metrics import MIRAccumulator, compute_mir


@pytest.fixture
def tokens(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(2):
        v = torch.randn(300, 6, generator=g) * (1 + i) + 1
        v[:4] *= 20  # outliers: the outlier mode matters
        tensors[f"vision.{i}"], tensors[f"text.{i}"] = v, torch.randn(120, 6, generator=g)
    path = tmp_path / "s.safetensors"
    save_file(tensors, str(path))
    vision = [tensors[f"vision.{i}"] for i in range(2)]
    text = [tensors[f"text.{i}"] for i in range(2)]
    return path, vision, text


def _json(tmp_path, capsys, *argv) -> dict:
    out = tmp_path / "r.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the official backend's caveat
        rc = main(["mir", *map(str, argv), "--json", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    return json.loads(out.read_text())


def test_explicit_flags_win_over_the_compat_preset(tokens, tmp_path, capsys):
    path, vision, text = tokens
    got = _json(tmp_path, capsys, "--tokens", path, "--compat", "official", "--sqrt", "exact")
    assert got["settings"]["sqrt"] == "exact" and got["settings"]["outliers"] == "median"
    ref = compute_mir(vision, text, sqrt="exact", outliers="median")
    assert got["mir"] == pytest.approx(ref.mir, rel=1e-12)
    assert got["mir"] != pytest.approx(compute_mir(vision, text).mir, rel=1e-6)


def test_token_run_records_its_resolved_settings_once(tokens, tmp_path, capsys):
    path, _, _ = tokens
    got = _json(tmp_path, capsys, "--tokens", path, "--outliers", "none", "--seed", "2")
    resolved = MIRSettings(outliers="none", seed=2).resolve()
    acc = MIRAccumulator(2, outliers="none")
    assert got["settings"] == {**acc.record("exact"), **resolved.record(TOKEN_RUN)}


def test_config_file_then_flags(tokens, tmp_path, capsys):
    path, vision, text = tokens
    config = tmp_path / "mir.yaml"
    config.write_text("compat: official\noutliers: none\nbaselines: true\nbaseline_tokens: 50\n")
    got = _json(tmp_path, capsys, "--tokens", path, "--config", config)
    settings = got["settings"]
    assert (settings["compat"], settings["sqrt"], settings["outliers"]) == ("official",
                                                                           "official", "none")  # fmt: skip
    assert got["metadata"]["baselines"]["tokens_per_set_max"] == 50
    got = _json(tmp_path, capsys, "--tokens", path, "--config", config, "--outliers", "drop")
    assert got["settings"]["outliers"] == "drop"  # the flag overrides the file
    with pytest.warns(UserWarning, match="official"):
        ref = compute_mir(vision, text, sqrt="official", outliers="drop")
    assert got["mir"] == pytest.approx(ref.mir, rel=1e-6)
    as_json = tmp_path / "mir.json"
    as_json.write_text(json.dumps({"sqrt": "newton_schulz"}))
    got = _json(tmp_path, capsys, "--tokens", path, "--config", as_json)
    assert got["settings"]["sqrt"] == "newton_schulz"


@pytest.mark.parametrize(
    ("argv", "config", "message"),
    [
        (["--median", "estimate"], None, "--median estimate applies to --outliers median only"),
        (["--n", "0"], None, "--n must be >= 1"),
        (["--repeats", "0"], None, "--repeats must be >= 1"),
        (["--batch-size", "0"], None, "--batch-size must be >= 1"),
        ([], '{"colour": "red"}', "unknown setting(s) colour; known: "),
        ([], '{"n": "many"}', "n: 'many' is not a valid int"),
        ([], '{"outliers": "keep"}', "outliers: 'keep' is not one of: drop, median, none"),
        ([], "[1, 2]", "expected a mapping of settings"),
    ],
)
def test_bad_settings_exit_2_with_one_line_and_write_nothing(
    tokens, tmp_path, capsys, argv, config, message
):
    path, _, _ = tokens
    extra = []
    if config is not None:
        (tmp_path / "c.json").write_text(config)
        extra = ["--config", str(tmp_path / "c.json")]
    out = tmp_path / "never.json"
    rc = main(["mir", "--tokens", str(path), *argv, *extra, "--json", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_flag_parse_errors_exit_2(tokens, capsys):
    path, _, _ = tokens
    assert main(["mir", "--tokens", str(path), "--layers", "1-x"]) == 2
    assert "--layers: cannot parse '1-x'" in capsys.readouterr().err
    assert main(["mir", "--tokens", str(path), "--num-samples", "many"]) == 2
