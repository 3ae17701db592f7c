"""`modalign mir`: MIR from a model, from saved token tensors, or `mir compare` of saved runs.

modalign mir --model PATH_OR_ID --images DIR --texts FILE [...]     (cli.mir_model)
modalign mir --tokens STATES.safetensors [--sqrt exact] [...]        (cli.mir_tokens)
modalign mir compare a.json b.json [--plot out.png]                  (cli.mir_compare)

The run flags are generated from `MIRSettings` (and the data flags from `ProbeData`); a
`--config FILE` (YAML/JSON, keys as the flags' names) sets any of them, flags given override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# MIRSettings fields by help group
DRAW = ("n", "seed", "repeats")
FORWARD = ("batch_size", "template", "max_text_tokens", "layers", "device", "dtype")
MATH = ("compat", "sqrt", "outliers", "median", "baselines", "baseline_tokens")


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign mir` (and its `compare` sub-command) to `p`."""
    from modalign.cli import mir_compare
    from modalign.cli.probe_options import ModelChoice, add_data_options
    from modalign.measure.reference import ReferenceSettings
    from modalign.measure.settings import MIRSettings
    from modalign.settings import add_config_option, add_options

    p.description = (
        "Compute MIR (log10 of summed per-layer Fréchet distances between vision and text token "
        "distributions; lower is better aligned). `modalign mir compare A.json B.json` compares runs."
    )
    add_options(p, ModelChoice, path="subject")
    p.add_argument("--tokens", type=Path, help="safetensors file with vision.<k> / text.<k> (n, d)")
    add_config_option(p)
    add_options(p.add_argument_group("MIR"), MIRSettings, path="mir", only=MATH)
    add_data_options(p)
    add_options(p.add_argument_group("probe draw"), MIRSettings, path="mir", only=DRAW)
    add_options(p.add_argument_group("forward passes"), MIRSettings, path="mir", only=FORWARD)
    add_options(p.add_argument_group("reference point"), ReferenceSettings, path="reference")
    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, help="write the full result as JSON (atomic)")
    g.add_argument("--plot", type=Path, help="write the per-layer gap plot (PNG)")
    g.add_argument("--quiet", action="store_true", help="print only the MIR value")
    g.add_argument("--dry-run", action="store_true", help="print one tokenized sample and stop")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="mir_action", metavar="{compare}")
    mir_compare.configure(
        sub.add_parser("compare", help="compare saved MIR results (table and per-layer plot)")
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch to the token-file or the model run."""
    if args.tokens is not None:
        from modalign.cli.mir_tokens import run_tokens

        return run_tokens(args)
    from modalign.cli.mir_model import run_model

    return run_model(args)
