"""Result fixtures for the report tests: MIR results as plain dicts (as written to JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def make_result(scale: float = 1.0, k: int = 6, model: str = "tiny-llava") -> dict[str, Any]:
    """A well-formed MIR result dict with k layers whose FD grows with depth."""
    per_layer = [scale * (1.0 + 0.5 * i) for i in range(k)]
    return {
        "mir": math.log10(sum(per_layer)),
        "per_layer": per_layer,
        "layers": list(range(1, k + 1)),
        "alpha": [0.05] * k,
        "n_vision": [640] * k,
        "n_text": [300 - i for i in range(k)],
        "outliers_vision": list(range(k)),
        "outliers_text": [1] * k,
        "centroid_gap": [0.5] * k,
        "cosine_gap": [0.01] * k,
        "settings": {"outliers": "drop", "sqrt": "exact", "seed": 0},
        "metadata": {
            "model": model,
            "samples": [{"image": f"{i}.png", "text": i} for i in range(20)],
        },
    }


@pytest.fixture
def result_factory() -> Callable[..., dict[str, Any]]:
    """The `make_result` helper as a fixture."""
    return make_result


@pytest.fixture
def result_files(tmp_path: Path) -> list[Path]:
    """Two result JSON files (a baseline and a better-aligned run)."""
    paths = []
    for name, scale, model in (("base", 1.0, "llava-a"), ("moca", 0.5, "llava-b")):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(make_result(scale, model=model)))
        paths.append(path)
    return paths
