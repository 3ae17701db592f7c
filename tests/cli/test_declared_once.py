"""The training flags are generated from the settings dataclasses: they give the recipes the
hand-written flags gave, a `--config` file fills the same dataclasses (flags override it), and a
finished stage's recorded settings replay the run bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from modalign.cli import build_parser, main
from modalign.errors import ConfigError

# Argument lists and the recipes the hand-written flags (`cli/train_options.py`, removed when the
# flags became generated) turned them into, recorded from that code in data/recipes_before.json.
TRAIN = [
    [],
    ["--stage", "sft"],
    ["--connector", "qformer:num_queries=8", "--moca", "--moca-std", "0.01"],
    ["--llm", "lora", "--lora-r", "8", "--lora-alpha", "4", "--lora-dropout", "0.1",
     "--lora-targets", "q_proj,v_proj", "--lora-keep"],
    ["--llm", "first:2", "--off-by-one-compat", "--vision", "from:1", "--connector-tune", "frozen"],
    ["--objective", "mfid:0.001", "--objective", "contrastive:0.5,prompt=true"],
    ["--steps", "7", "--batch-size", "4", "--grad-accum", "2", "--lr", "0.01", "--lr-connector",
     "0.02", "--lr-llm", "0.001", "--warmup-ratio", "0.1", "--schedule", "linear",
     "--weight-decay", "0.1", "--seed", "3", "--save-steps", "5", "--log-steps", "1",
     "--precision", "bf16", "--gradient-checkpointing", "--report-to", "tensorboard", "--quiet"],
    ["--epochs", "2.5", "--batch-size", "8"],
    ["--mir-every", "10", "--mir-patience", "5", "--mir-delta", "0.02", "--mir-min-steps", "20",
     "--mir-n", "50", "--mir-early-stop"],
    ["--stage", "sft", "--cognition", "pixel", "--cognition-p", "0.5", "--cognition-grid", "4"],
    ["--max-length", "512", "--plain-end", "eos"],
]  # fmt: skip
LAB_PRETRAIN = [
    [],
    ["--steps", "5", "--mir-every", "2", "--connector", "pool"],
    ["--llm", "full", "--lr-llm", "1e-4"],
]
LAB_SFT = [[], ["--steps", "5", "--lr", "1e-3", "--vision", "full"]]
LAB_CYCLE = [
    [],
    # `--pretrain-steps` was "same as --steps" and is gone; `--unlock-vision` is `--sft-vision full`
    ["--train", "100", "--level", "mixed", "--steps", "9", "--sft-steps", "4",
     "--sft-lr", "0.002", "--single-turn", "--sft-vision", "full", "--seed", "2", "--save-steps",
     "3", "--quiet", "--image-size", "288", "--glyph-scale", "3", "--from-scratch"],
    ["--mir-every", "0", "--connector", "sa_perceiver:grid_rows=3,grid_cols=3", "--cognition",
     "pixel", "--cognition-p", "0.5"],
]  # fmt: skip
BEFORE = json.loads((Path(__file__).parent / "data" / "recipes_before.json").read_text())
BASE = ["--model", "m", "--data", "d.json", "--out", "o"]


def _train(argv):
    from modalign.cli.train_cmd import train_settings

    args = build_parser("train").parse_args(["train", *BASE, *argv])
    return train_settings(args)


@pytest.mark.parametrize("i", range(len(TRAIN)))
def test_train_flags_give_the_recipes_they_gave_before(i):
    recipe = _train(TRAIN[i])[1].resolved(100)
    expected = BEFORE["train"][i]
    if "--moca" in TRAIN[i]:
        # MoCa is switched in one place now: `--moca` attaches it, and a model that carries MoCa
        # trains it in every stage (`Recipe.stage_for`); the unlock record no longer repeats it.
        expected["stage"]["unlock"]["moca"] = False
    assert json.loads(json.dumps(recipe.to_dict())) == expected


@pytest.mark.parametrize(("stage", "cases"), [("pretrain", LAB_PRETRAIN), ("sft", LAB_SFT)])
def test_lab_stage_flags_give_the_recipes_they_gave_before(stage, cases):
    import modalign_lab.cli as lab
    from modalign_lab.pipeline.cycle import lab_preset

    for argv, expected in zip(cases, BEFORE[f"lab_{stage}"], strict=True):
        extra = ["--model", "m"] if stage == "sft" else ["--base", "b"]
        args = build_parser("lab").parse_args(
            ["lab", stage, "--data", "d", "--out", "o", *extra, *argv]
        )
        recipe = lab._recipe(args, lab_preset(stage), 100)
        assert json.loads(json.dumps(recipe.to_dict())) == expected


def test_lab_cycle_flags_give_the_configs_they_gave_before():
    import modalign_lab.cli as lab
    from modalign_lab.pipeline.cycle import config_record

    for argv, expected in zip(LAB_CYCLE, BEFORE["lab_cycle"], strict=True):
        args = build_parser("lab").parse_args(["lab", "cycle", "--out", "o", *argv])
        assert config_record(lab.cycle_config(args)) == expected


def test_help_shows_every_field_once_with_its_default(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--lora-r", "--mir-every", "--cognition-p", "--lr-connector", "--epochs"):
        assert text.count(f"  {flag} ") + text.count(f"  {flag}\n") == 1, flag
    assert "LoRA rank (default: 64)" in " ".join(text.split())
    assert "--plain-end {newline,eos}" in text


def test_config_file_fills_the_dataclasses_and_flags_override_it(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train": {"lr": 0.005, "batch_size": 2},
                                  "stage": {"unlock": {"llm": "lora", "lora": {"r": 4}}},
                                  "inputs": {"model": "mm", "data": "dd.json"}}))  # fmt: skip
    args = build_parser("train").parse_args(["train", "--config", str(config), "--out", "o",
                                             "--batch-size", "3"])  # fmt: skip
    from modalign.cli.train_cmd import train_settings

    inputs, recipe = train_settings(args)
    assert (inputs.model, str(inputs.data)) == ("mm", "dd.json")
    assert (recipe.train.lr, recipe.train.batch_size) == (0.005, 3)  # the flag wins
    assert recipe.stage.unlock.llm == "lora" and recipe.stage.unlock.lora.r == 4
    assert recipe.stage.unlock.lora.alpha == 16.0  # what the file leaves out: the preset's


def test_yaml_config(tmp_path):
    pytest.importorskip("yaml")
    config = tmp_path / "c.yaml"
    config.write_text("inputs:\n  model: mm\n  data: dd.json\n  stage: sft\ntrain:\n  steps: 9\n")
    args = build_parser("train").parse_args(["train", "--config", str(config), "--out", "o"])
    from modalign.cli.train_cmd import train_settings

    inputs, recipe = train_settings(args)
    assert inputs.stage == "sft" and recipe.stage.name == "sft" and recipe.train.steps == 9
    assert recipe.train.lr == 2e-5  # the SFT preset's


@pytest.mark.parametrize(
    ("config", "argv", "message"),
    [
        ({"trian": {}}, [], "unknown key(s) trian"),
        ({"train": {"lrr": 1}}, [], "unknown config.train option(s) lrr"),
        ({"train": {"lr": "fast"}}, [], "'fast' is not a valid float"),
        ({}, ["--steps", "many"], "--steps: 'many' is not a valid int"),
        ({}, ["--cognition-p", "0.5"], "--cognition"),  # the group is off without --cognition
        ({"inputs": {"data": "d.json"}}, [], "missing setting(s) model (--model)"),
        ({"stage": {"name": "sft"}, "inputs": {"model": "m", "data": "d"}}, [], "'sft' stage"),
    ],
)
def test_bad_settings_are_one_line(tmp_path, capsys, config, argv, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    extra = [] if "inputs" in config else ["--model", "m", "--data", "d.json"]
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o"), *extra, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_recorded_settings_replay_the_run_bit_for_bit(tiny_llava, tiny_data, tmp_path):
    first = tmp_path / "first"
    argv = ["train", "--model", str(tiny_llava), "--data",
            str(tiny_data / "llava" / "pretrain_level2.json"), "--image-folder", str(tiny_data),
            "--out", str(first), "--steps", "2", "--batch-size", "4", "--save-steps", "0",
            "--quiet", "--limit", "8", "--connector", "linear", "--moca", "--lr", "0.01",
            "--objective", "mfid:0.01"]  # fmt: skip
    assert main(argv) == 0
    settings = json.loads((first / "stage_settings.json").read_text())
    assert settings["inputs"]["model"] == str(Path(tiny_llava).resolve())
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "stage_settings.json"), "--out", str(again)]) == 0
    assert json.loads((again / "stage_settings.json").read_text()) == settings
    a = load_file(str(first / "model" / "model.safetensors"))
    b = load_file(str(again / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_coerce_and_spec_grammar():
    from modalign.settings import coerce, parse_spec

    assert coerce("0.5", float | None, "x") == 0.5 and coerce("none", int | None, "x") is None
    assert coerce([["a", "1"]], tuple[tuple[str, int], ...], "x") == (("a", 1),)
    assert coerce("yes", bool, "x") is True and coerce("2", int, "x") == 2
    with pytest.raises(ConfigError, match="x: 'b' is not a valid int"):
        coerce("b", int, "x")
    with pytest.raises(ConfigError, match="is not a valid float"):
        coerce(True, float, "x")  # a bool is not a number here
    assert parse_spec("first:16", "llm tune").arg == "16"
    spec = parse_spec("qformer:num_queries=32,text_input=none", "connector", positional=False)
    assert spec.arg is None and spec.options == (("num_queries", "32"), ("text_input", "none"))
    with pytest.raises(ConfigError, match="given twice"):
        parse_spec("sea,window=1,window=2", "objective")
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_spec("pool:grid", "connector", positional=False)


def test_apply_changes_and_from_mapping_round_trip():
    from modalign.settings import apply_changes, from_mapping, to_dict
    from modalign.train import Recipe

    base = Recipe.defaults("pretrain")
    changed = apply_changes(base, {"train.lr": 0.5, "stage.unlock.lora.r": 2,
                                   "stage.component_lrs.llm": 1e-5, "monitor.every": 3})  # fmt: skip
    assert changed.train.lr == 0.5 and changed.stage.unlock.lora.r == 2
    assert changed.stage.component_lrs == {"llm": 1e-5} and changed.monitor.every == 3
    assert base.train.lr == 1e-3 and base.monitor is None  # a copy
    assert from_mapping(Recipe, to_dict(changed)) == changed
    with pytest.raises(ConfigError, match="no setting 'nope'"):
        apply_changes(base, {"nope": 1})
