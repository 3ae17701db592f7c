"""What the `mir` commands share: settings presets, output-path checks, the printed summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from modalign.atomic import check_writable


def resolve_settings(args: argparse.Namespace) -> tuple[str, str]:
    """(sqrt, outliers) from explicit flags, falling back on the --compat preset."""
    official = args.compat == "official"
    sqrt = args.sqrt or ("official" if official else "exact")
    outliers = args.outliers or ("median" if official else "drop")
    return sqrt, outliers


def check_outputs(args: argparse.Namespace, *flags: str) -> None:
    """Refuse unwritable output paths before any work is done (e.g. flags 'json', 'plot')."""
    for flag in flags:
        path = getattr(args, flag, None)
        if path is not None:
            check_writable(Path(path), f"--{flag}")


def print_summary(result, quiet: bool) -> None:
    """The one-screen summary, or only the MIR value with --quiet."""
    if quiet:
        print(f"{result.mir:.6f}")
        return
    from modalign.report import summary_table

    print(summary_table(result))


def print_baselines(b: dict) -> None:
    """The supplementary's baselines in one line (lower is better for all)."""
    print(
        f"baselines: MMD {b['mmd']:.4g} (layer-wise {b['mmd_layerwise']:.4g}), "
        f"KID {b['kid']:.4g} (layer-wise {b['kid_layerwise']:.4g})"
    )
