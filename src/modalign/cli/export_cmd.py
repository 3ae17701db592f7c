"""`modalign export`: convert a checkpoint into a form that tools without modalign load.

    modalign export runs/sft/model --out exported/ [--format auto|llava|custom-code]

llava: plain transformers LLaVA, for LLaVA's own projector (linear, mlp2x_gelu) without MoCa or a
kept LoRA. custom-code: transformers' custom-code convention (`from_pretrained(DIR,
trust_remote_code=True)`), for any connector, MoCa and a kept LoRA. auto: llava where possible,
else custom-code. A form the model does not have (MoCa cannot be folded into Llama weights, a
Q-Former is not LLaVA's projector) is one line saying why, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse

SETTINGS = "export"  # namespace prefix of the ExportSettings flags


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign export`."""
    from modalign.models.export.convert import ExportSettings
    from modalign.settings import add_config_option, add_options

    p.description = __doc__.split("\n\n")[0]
    p.add_argument("source", metavar="SRC", help="checkpoint folder (or hub id) to convert")
    add_config_option(p)
    add_options(p, ExportSettings, path=SETTINGS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modalign.models.export.convert import ExportSettings, export_checkpoint, how_to_load
    from modalign.settings import load_config, settings_from

    config = load_config(args.config) if getattr(args, "config", None) else None
    settings = settings_from(ExportSettings, args, SETTINGS, config=config)
    form = export_checkpoint(args.source, settings.out, settings.format)
    print(f"wrote the {form} form of {args.source} to {settings.out}")
    print(f"  load it with {how_to_load(form, settings.out)}")
    return 0
