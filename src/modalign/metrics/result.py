"""The result of an MIR computation: per-layer numbers, settings and free-form metadata, as JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PER_LAYER_FIELDS", "MIRResult", "result_schema", "write_json_atomic"]

# Lists with one entry per layer, all the same length as `layers`.
PER_LAYER_FIELDS = (
    "per_layer",
    "alpha",
    "n_vision",
    "n_text",
    "outliers_vision",
    "outliers_text",
    "centroid_gap",
    "cosine_gap",
)


@dataclass
class MIRResult:
    """MIR = log10(sum of per-layer Fréchet distances after text-centric scaling)."""

    mir: float
    per_layer: list[float]  # FD_k after scaling by alpha_k
    layers: list[int]  # decoder layer index of each entry (1-based: hidden_states[k])
    alpha: list[float]  # text-centric scale 1 / mean ||f_t|| per layer
    n_vision: list[int]  # tokens used per layer after outlier handling
    n_text: list[int]
    outliers_vision: list[int]  # tokens found outside the 3-sigma norm band per layer
    outliers_text: list[int]
    centroid_gap: list[float]  # ||mu_v - mu_t|| after scaling
    cosine_gap: list[float]  # 1 - cos(mu_v, mu_t)
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.layers)
        for name in PER_LAYER_FIELDS:
            if len(getattr(self, name)) != k:
                raise ValueError(
                    f"MIRResult.{name} has {len(getattr(self, name))} entries, expected {k}"
                )
        if not math.isfinite(self.mir):
            raise ValueError(f"MIRResult.mir must be finite, got {self.mir}")

    @property
    def total(self) -> float:
        """Sum of per-layer distances (10 ** mir)."""
        return float(sum(self.per_layer))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MIRResult:
        missing = [f for f in ("mir", "layers", *PER_LAYER_FIELDS) if f not in data]
        if missing:
            raise ValueError(f"not an MIR result: missing keys {missing}")
        fields = {f: data[f] for f in ("mir", "layers", *PER_LAYER_FIELDS)}
        return cls(**fields, settings=data.get("settings", {}), metadata=data.get("metadata", {}))

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename): a reader never sees a half-written file."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> MIRResult:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(data)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Serialize `data` to `path` via a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def result_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every written MIR result follows."""
    return json.loads((Path(__file__).with_name("mir_result.schema.json")).read_text())
