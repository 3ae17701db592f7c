"""`modalign mir`: MIR from a model, from saved token tensors, or `mir compare` of saved runs.

modalign mir --model PATH_OR_ID --images DIR --texts FILE [...]     (cli.mir_model)
modalign mir --tokens STATES.safetensors [--sqrt exact] [...]        (cli.mir_tokens)
modalign mir compare a.json b.json [--plot out.png]                  (cli.mir_compare)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign mir` (and its `compare` sub-command) to `p`."""
    from modalign.cli import mir_compare, mir_model
    from modalign.metrics import MEDIAN_MODES, OUTLIER_MODES, SQRT_BACKENDS

    p.description = (
        "Compute MIR (log10 of summed per-layer Fréchet distances between vision and text token "
        "distributions; lower is better aligned). `modalign mir compare A.json B.json` compares runs."
    )
    p.add_argument("--tokens", type=Path, help="safetensors file with vision.<k> / text.<k> (n, d)")
    p.add_argument(
        "--sqrt",
        choices=SQRT_BACKENDS.names(),
        default=None,
        help="trace-square-root backend (default: exact; official with --compat official)",
    )
    p.add_argument(
        "--outliers",
        choices=OUTLIER_MODES,
        default=None,
        help="3-sigma norm outlier handling (default: drop; median with --compat official)",
    )
    p.add_argument(
        "--median",
        choices=MEDIAN_MODES,
        default="exact",
        help="per-dimension median of --outliers median: exact (default; may need one more pass "
        "over the samples) or estimate (from a seeded sample of 4096 tokens, one pass)",
    )
    p.add_argument(
        "--compat",
        choices=["none", "official"],
        default="none",
        help="'official' reproduces the official MIR code (median outliers, tr(S_v S_t))",
    )
    p.add_argument("--json", type=Path, help="write the full result as JSON (atomic)")
    p.add_argument("--quiet", action="store_true", help="print only the MIR value")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also MMD, KID (plain and layer-wise) and centroid gaps (model runs: on a uniform "
        "sample of 2048 tokens per layer and modality, from the same forward passes)",
    )
    mir_model.add_model_arguments(p)
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
