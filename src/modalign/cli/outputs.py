"""What the `mir` commands share: their settings read once (config file <- flags, resolved),
output-path checks, the printed summary."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modalign.atomic import check_writable
from modalign.cli.probe_options import ModelChoice, ProbeData, read_config
from modalign.errors import ConfigError
from modalign.measure.reference import ReferenceSettings
from modalign.measure.settings import MIRSettings
from modalign.settings import settings_from

SECTIONS = {"mir": MIRSettings, "data": ProbeData, "subject": ModelChoice,
            "reference": ReferenceSettings}  # fmt: skip


def read_sections(args: argparse.Namespace) -> dict[str, Any]:
    """Every settings section of `modalign mir` from `--config` and the flags given, the MIR
    settings resolved (compat preset, refused combinations): before any work."""
    config = read_config(args, SECTIONS)
    out = {
        name: settings_from(cls, args, name, config=config[name]) for name, cls in SECTIONS.items()
    }
    out["mir"] = out["mir"].resolve()
    return out


def check_outputs(args: argparse.Namespace, *flags: str, reads: Sequence[Any] = ()) -> None:
    """Refuse unwritable output paths before any work is done (e.g. flags 'json', 'plot'), and
    outputs that would overwrite what the run reads (`reads`: its input files and folders, the
    `--config` file included)."""
    inputs = [*reads, getattr(args, "config", None)]
    chosen = [(f, getattr(args, f, None)) for f in flags if getattr(args, f, None) is not None]
    for flag, path in chosen:
        check_writable(Path(path), f"--{flag}", inputs)
    for i, (flag, path) in enumerate(chosen):  # two outputs on one file: the second would win
        for other, other_path in chosen[i + 1 :]:
            if Path(path).expanduser().resolve() == Path(other_path).expanduser().resolve():
                raise ConfigError(f"--{flag} and --{other} are the same file {str(path)!r}")


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
