"""Measuring a model: pairs -> adapter forward passes -> MIR accumulators -> `MIRResult`, on one
process or sharded across many, with the run's settings declared once (`MIRSettings`).

Names are loaded on first use, so that reading the settings (e.g. for `modalign mir --help`)
does not load the model code.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Layers": "modalign.measure.layers",
    "MIRSettings": "modalign.measure.settings",
    "ReferenceSettings": "modalign.measure.reference",
    "RepeatSummary": "modalign.measure.run",
    "RunOptions": "modalign.measure.run",
    "distributed_context": "modalign.measure.run",
    "fresh_connector_reference": "modalign.measure.reference",
    "init_distributed_from_env": "modalign.measure.run",
    "locate_nonfinite": "modalign.measure.run",
    "parse_layers": "modalign.measure.layers",
    "run_mir": "modalign.measure.run",
    "run_repeats": "modalign.measure.run",
    "shard": "modalign.measure.run",
}

__all__ = [
    "Layers",
    "MIRSettings",
    "ReferenceSettings",
    "RepeatSummary",
    "RunOptions",
    "distributed_context",
    "fresh_connector_reference",
    "init_distributed_from_env",
    "locate_nonfinite",
    "parse_layers",
    "run_mir",
    "run_repeats",
    "shard",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'modalign.measure' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return __all__
