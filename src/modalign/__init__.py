"""modalign: measure (MIR) and improve (MoCa, SEA, VLSA...) cross-modal alignment in LVLMs.

    import modalign
    result = modalign.mir("llava-hf/llava-1.5-7b-hf", images="val/", texts="passages.txt")
    modalign.train_model("./llava-base", "blip_558k.json", "runs/pt", connector="mlp2x_gelu")

Importing the package has no side effects and loads nothing heavy: the names below load their
home module on first use (torch, transformers, matplotlib come with them).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the library module that defines it (and lists it in its __all__; tested)
_HOMES = {
    "mir": "modalign.api",
    "train_model": "modalign.api",
    "MIRResult": "modalign.metrics",
    "compute_mir": "modalign.metrics",
    "frechet_distance": "modalign.metrics",
    "result_schema": "modalign.metrics",
    "MIRSettings": "modalign.measure",
    "run_mir": "modalign.measure",
    "load_adapter": "modalign.models",
    "load_model": "modalign.models",
    "Recipe": "modalign.train",
    "TrainInputs": "modalign.train",
    "ConfigError": "modalign.errors",
    "DataError": "modalign.errors",
    "MetricError": "modalign.errors",
    "ModalignError": "modalign.errors",
    "ModelError": "modalign.errors",
}

__all__ = ["__version__", *sorted(_HOMES)]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'modalign' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return __all__
