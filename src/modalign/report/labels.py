"""Run labels for tables and plots: given ones checked, or defaults from file names / models."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from modalign.errors import ConfigError
from modalign.metrics.result import MIRResult


def default_labels(
    runs: Sequence[MIRResult], sources: Sequence[str | os.PathLike[str]] | None = None
) -> list[str]:
    """File stems when they are distinct, else model names when distinct, else run1, run2 ..."""
    candidates = []
    if sources is not None:
        candidates.append([Path(s).stem for s in sources])
    candidates.append([r.model for r in runs])
    for names in candidates:
        if all(names) and len(set(names)) == len(names):
            return list(names)
    return [f"run{i + 1}" for i in range(len(runs))]


def check_labels(
    runs: Sequence[MIRResult],
    labels: Sequence[str] | None,
    sources: Sequence[str | os.PathLike[str]] | None = None,
) -> list[str]:
    """Validate user labels (one per run) or make default ones."""
    if not runs:
        raise ConfigError("no results given")
    if labels is None:
        return default_labels(runs, sources)
    if len(labels) != len(runs):
        raise ConfigError(f"got {len(labels)} labels for {len(runs)} results (need one per result)")
    return [str(label) for label in labels]
