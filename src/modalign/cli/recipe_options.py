"""The training settings on the command line, shared by `modalign train` and `modalign lab
pretrain|sft|cycle`: every flag is generated from the `Recipe` dataclasses
(`modalign.settings.option`), a `--config FILE` (YAML or JSON, e.g. a run's
`stage_settings.json`) fills the same dataclasses, and the flags given override it.

    add_recipe_options(parser, Recipe.defaults("pretrain"))      # the preset sets the defaults
    recipe = recipe_from_options(args, preset, config)           # preset <- config <- flags

Light at import (no torch): the classes come with the preset.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

from modalign import settings
from modalign.errors import ConfigError
from modalign.settings import add_options, apply_changes, from_mapping, given_options, load_config

__all__ = [
    "RECIPE",
    "add_config_option",
    "add_recipe_options",
    "read_config",
    "recipe_from_options",
]

RECIPE = "recipe"  # namespace prefix of the recipe's flags
RECORDED_ONLY = ("n_samples", "identity")  # in recorded stage settings: derived from the inputs


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` of the training commands (keys nested as in `stage_settings.json`)."""
    settings.add_config_option(
        parser, "as in a run's stage_settings.json, which replays that run: inputs, stage, "
        "train, connector, moca, monitor ...",
    )  # fmt: skip


def add_recipe_options(parser: argparse.ArgumentParser, preset: Any) -> None:
    """A flag for every field of the recipe (defaults shown: the preset's)."""
    add_options(parser, type(preset), path=RECIPE, defaults=preset)


def read_config(args: argparse.Namespace, known: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `--config` file's mapping ({} without one); keys other than the recipe's fields,
    `known` and the recorded-only ones are refused."""
    path = getattr(args, "config", None)
    if path is None:
        return {}
    from modalign.train import Recipe

    config = load_config(path)
    allowed = {f.name for f in dataclasses.fields(Recipe)} | set(known) | set(RECORDED_ONLY)
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )
    return config


def recipe_from_options(
    args: argparse.Namespace,
    preset: Any,
    config: Mapping[str, Any] | None = None,
    given: Mapping[str, Any] | None = None,
) -> Any:
    """The recipe: `preset`, then the config file's recipe keys, then the flags given (`given`:
    the recipe's flags when the caller has sorted them already). `--mir-every 0` switches the
    MIR monitor off."""
    recipe = preset
    fields = {f.name for f in dataclasses.fields(type(preset))}
    from_file = {k: v for k, v in (config or {}).items() if k in fields}
    if from_file:
        recipe = from_mapping(type(preset), from_file, "config", base=preset)
    given = dict(given_options(args, RECIPE) if given is None else given)
    if given.get("monitor.every") == 0:
        given = {k: v for k, v in given.items() if not k.startswith("monitor.")}
        given["monitor"] = None
    return apply_changes(recipe, given)
