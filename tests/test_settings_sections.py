"""`modalign.settings` as the measurement commands use it: flag aliases, a field declared like
another's, choice checks, config files split by section, and settings built from
defaults <- config <- flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from modalign.errors import ConfigError
from modalign.settings import (
    add_config_option,
    add_options,
    apply_changes,
    check_choices,
    from_mapping,
    load_config,
    option,
    option_like,
    settings_from,
    split_config,
)


@dataclasses.dataclass(frozen=True)
class Run:
    n: int = option(100, help="number of pairs", other_flags=("--num-samples",))
    mode: str | None = option(None, choices=("drop", "none"), help="outlier mode")
    limit: int | None = option(None, help="a cap")
    quiet: bool = option(False, help="say less")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.n < 1:
            raise ConfigError(f"--n must be >= 1, got {self.n}")


@dataclasses.dataclass(frozen=True)
class Data:
    images: Path | None = option(None, help="image folder")
    n: int = option_like(Run, "n", default=7)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, Run, path="run")
    add_config_option(parser)
    return parser.parse_args(argv)


def test_aliases_name_one_flag_and_metavars_are_field_names():
    assert vars(_parse(["--n", "3"])) == {"run.n": 3, "config": None}
    assert vars(_parse(["--num-samples", "4"]))["run.n"] == 4
    parser = argparse.ArgumentParser()
    add_options(parser, Run, path="run")
    text = parser.format_help()
    assert "--n N, --num-samples N" in text and "RUN.N" not in text
    assert "--mode {drop,none}" in text and "--limit LIMIT" in text


def test_option_like_shares_the_declaration_with_another_default():
    field = {f.name: f for f in dataclasses.fields(Data)}["n"]
    original = {f.name: f for f in dataclasses.fields(Run)}["n"]
    assert Data().n == 7 and Run().n == 100
    assert dict(field.metadata) == dict(original.metadata)
    changed = option_like(Run, "mode", help="other help")
    assert changed.metadata["help"] == "other help" and changed.metadata["choices"] == (
        "drop",
        "none",
    )
    assert changed.default is None
    with pytest.raises(ConfigError, match="Run has no setting 'seed'"):
        option_like(Run, "seed")


def test_check_choices_refuses_a_value_outside_them():
    with pytest.raises(ConfigError, match="mode: 'keep' is not one of: drop, none"):
        Run(mode="keep")
    assert Run(mode=None).mode is None


def test_a_choice_named_none_is_not_none():
    """An outlier mode called 'none' stays the string on every path (flags, mappings,
    changes); for a field without choices 'none' is still None."""
    args = _parse(["--mode", "none", "--limit", "none"])
    assert args.__dict__["run.mode"] == "none" and args.__dict__["run.limit"] is None
    assert from_mapping(Run, {"mode": "none"}).mode == "none"
    assert apply_changes(Run(), {"mode": "none"}).mode == "none"
    assert settings_from(Run, argparse.Namespace(), "run", config={"mode": "none"}).mode == "none"


def test_split_config_by_section_and_unknown_keys_refused():
    parts = split_config({"n": 5, "images": "imgs", "quiet": True}, {"run": Run, "data": Data})
    assert parts == {"run": {"n": 5, "quiet": True}, "data": {"images": "imgs", "n": 5}}
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) colour, size; known: "):
        split_config({"colour": 1, "size": 2, "n": 1}, {"run": Run})


def test_settings_from_defaults_config_then_flags(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"n": 0, "mode": "drop", "limit": 5}))
    args = _parse(["--config", str(config), "--n", "12", "--limit", "none"])
    run = settings_from(Run, args, "run", config=load_config(args.config))
    # built once: the config's n=0 alone would be refused, the flag's 12 wins first
    assert run == Run(n=12, mode="drop", limit=None, quiet=False)
    assert settings_from(Run, _parse([]), "run") == Run()
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("n: 3\nquiet: true\n")
    assert settings_from(Run, _parse([]), "run", config=load_config(yaml_file)) == Run(
        n=3, quiet=True
    )
    with pytest.raises(ConfigError, match="--n must be >= 1"):
        settings_from(Run, _parse([]), "run", config={"n": 0})
    with pytest.raises(ConfigError, match="n: 'many' is not a valid int"):
        settings_from(Run, _parse([]), "run", config={"n": "many"})


def test_the_module_examples_run():
    import doctest

    import modalign.settings

    result = doctest.testmod(modalign.settings, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
