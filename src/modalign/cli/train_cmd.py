"""`modalign train`: pre-train or fine-tune an HF LLaVA-family model from LLaVA-format data.

    modalign train --model PATH --data blip_558k.json --image-folder images/ --out runs/pt \\
        --stage pretrain [--connector mlp2x_gelu] [--moca] [--llm frozen|full|lora|first:N] \\
        [--objective mfid:0.001] [--mir-every 100 --mir-images probe/ --mir-texts texts.txt]
    modalign train --config runs/pt/stage_settings.json --out runs/pt2     # replay a run
    torchrun --nproc_per_node 8 $(which modalign) train ...     # many processes (or accelerate launch)

Every flag comes from the settings dataclasses (`TrainInputs`, `Recipe`); `--config FILE` fills
them from YAML/JSON and the flags given override it. A killed run resumes when re-run with the
same settings; a finished one is not redone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modalign.train.run import INPUTS  # the namespace prefix of the TrainInputs flags


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign train`."""
    from modalign.cli.recipe_options import add_config_option, add_recipe_options
    from modalign.settings import add_options
    from modalign.train import Recipe
    from modalign.train.inputs import TrainInputs

    p.description = __doc__.split("\n\n")[0]
    add_config_option(p)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, model, logs)")
    add_options(p.add_argument_group("inputs"), TrainInputs, path=INPUTS)
    add_recipe_options(p, Recipe.defaults("pretrain"))
    p.set_defaults(func=run)


def train_settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """(inputs, recipe): the stage's preset, then `--config`, then the flags given."""
    from modalign.cli.recipe_options import read_config, recipe_from_options
    from modalign.errors import ConfigError
    from modalign.settings import from_mapping, given_options, merge_config
    from modalign.train import Recipe
    from modalign.train.inputs import TrainInputs

    config = read_config(args, known=(INPUTS,))
    given = merge_config(config.get(INPUTS, {}), given_options(args, INPUTS))
    inputs = from_mapping(TrainInputs, given, INPUTS)
    recorded = config.get("stage", {}).get("name")
    if recorded is not None and recorded != inputs.stage:
        raise ConfigError(f"--config holds a {recorded!r} stage but the stage is {inputs.stage!r}")
    return inputs, recipe_from_options(args, Recipe.defaults(inputs.stage), config)


def run(args: argparse.Namespace) -> int:
    from modalign.measure import distributed_context
    from modalign.train.run import run_training

    inputs, recipe = train_settings(args)
    summary = run_training(inputs, recipe, args.out, config=getattr(args, "config", None))
    if distributed_context()[0] == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "stopped_early_at", "train_loss")}))
        print(f"model written to {args.out / 'model'}")
    return 0
