"""`modalign mir`: MIR from a model (see cli.mir_model), from saved token tensors, or compare runs.

modalign mir --tokens STATES.safetensors [--sqrt exact] [--outliers drop] [--json OUT.json]
modalign mir --model PATH_OR_ID --images DIR --texts FILE [...]
modalign mir compare a.json b.json [--plot out.png]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from modalign.cli import CLIError
from modalign.metrics import OUTLIER_MODES, SQRT_BACKENDS, MIRResult, compute_mir

_KEY = re.compile(r"^(vision|text)\.(\d+)$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mir",
        help="compute the Modality Integration Rate",
        description="Compute MIR (log10 of summed per-layer Fréchet distances between vision "
        "and text token distributions). `modalign mir compare A.json B.json` compares runs.",
    )
    p.add_argument("--tokens", type=Path, help="safetensors file with vision.<k> / text.<k> (n, d)")
    p.add_argument(
        "--sqrt",
        choices=sorted(SQRT_BACKENDS),
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
        help="with --tokens: also MMD, KID (plain and layer-wise) and centroid gaps",
    )
    from modalign.cli import mir_model

    mir_model.add_model_arguments(p)
    p.set_defaults(func=run)


def resolve_settings(args: argparse.Namespace) -> tuple[str, str]:
    """(sqrt, outliers) from explicit flags, falling back on the --compat preset."""
    official = args.compat == "official"
    sqrt = args.sqrt or ("official" if official else "exact")
    outliers = args.outliers or ("median" if official else "drop")
    return sqrt, outliers


def load_token_file(path: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer vision and text tensors from a safetensors file (safe: no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"token file not found: {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable safetensors file ({exc})") from exc
    layers: dict[str, dict[int, torch.Tensor]] = {"vision": {}, "text": {}}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise CLIError(f"{path}: unexpected key {key!r} (expected vision.<k> / text.<k>)")
        if not t.is_floating_point():
            raise CLIError(f"{path}: {key} must be a float tensor, got {t.dtype}")
        layers[m.group(1)][int(m.group(2))] = t
    k = len(layers["vision"])
    if k == 0:
        raise CLIError(f"{path}: no vision.<k> tensors (a model with no image tokens?)")
    for mod in ("vision", "text"):
        if sorted(layers[mod]) != list(range(k)):
            raise CLIError(f"{path}: {mod} layers {sorted(layers[mod])} do not match 0..{k - 1}")
    return [layers["vision"][i] for i in range(k)], [layers["text"][i] for i in range(k)]


def print_summary(result: MIRResult, quiet: bool) -> None:
    """The one-screen summary, or only the MIR value with --quiet."""
    if quiet:
        print(f"{result.mir:.6f}")
        return
    from modalign.report import summary_table

    print(summary_table(result))


def run(args: argparse.Namespace) -> int:
    from modalign.cli import mir_model

    if args.tokens is None:
        return mir_model.run_model(args)
    sqrt, outliers = resolve_settings(args)
    vision, text = load_token_file(args.tokens)
    result = compute_mir(vision, text, sqrt=sqrt, outliers=outliers)
    result.settings["compat"] = args.compat
    result.metadata.update({"source": "tokens", "tokens": str(args.tokens)})
    if args.baselines:
        from modalign.metrics import baseline_report

        result.metadata["baselines"] = baseline_report(vision, text)
    if args.json:
        result.to_json(args.json)
    print_summary(result, args.quiet)
    if args.baselines and not args.quiet:
        b = result.metadata["baselines"]
        print(
            f"baselines: MMD {b['mmd']:.4g} (layer-wise {b['mmd_layerwise']:.4g}), "
            f"KID {b['kid']:.4g} (layer-wise {b['kid_layerwise']:.4g})"
        )
    if args.json and not args.quiet:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
