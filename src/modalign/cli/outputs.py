"""What the `mir` commands share: their settings read once (config file <- flags, resolved),
output-path checks, the printed summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modalign.atomic import check_writable
from modalign.cli.probe_options import ModelChoice, ProbeData, read_config
from modalign.measure.settings import MIRSettings
from modalign.settings import settings_from

SECTIONS = {"mir": MIRSettings, "data": ProbeData, "subject": ModelChoice}


def read_sections(args: argparse.Namespace) -> dict[str, Any]:
    """Every settings section of `modalign mir` from `--config` and the flags given, the MIR
    settings resolved (compat preset, refused combinations): before any work."""
    config = read_config(args, SECTIONS)
    out = {
        name: settings_from(cls, args, name, config=config[name]) for name, cls in SECTIONS.items()
    }
    out["mir"] = out["mir"].resolve()
    return out


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


def print_baseline_spread(spread: dict, repeats: int) -> None:
    """The baselines' mean and standard deviation over the repeats, in one line."""
    parts = ", ".join(
        f"{label} {spread[key]['mean']:.4g} +- {spread[key]['std']:.3g}"
        for label, key in (("MMD", "mmd"), ("layer-wise", "mmd_layerwise"), ("KID", "kid"),
                           ("layer-wise", "kid_layerwise"))
    )  # fmt: skip
    print(f"baselines over {repeats} subsets (mean +- std): {parts}")
