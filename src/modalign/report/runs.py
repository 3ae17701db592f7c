"""Normalise MIR results (MIRResult objects, dicts or JSON files) into one validated view."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED = ("mir", "per_layer", "layers")
OPTIONAL_LISTS = ("alpha", "n_vision", "n_text", "outliers_vision", "outliers_text")


@dataclass(frozen=True)
class RunView:
    """The parts of an MIR result that reports use; optional per-layer lists may be empty."""

    mir: float
    per_layer: list[float]
    layers: list[int]
    alpha: list[float] = field(default_factory=list)
    n_vision: list[int] = field(default_factory=list)
    n_text: list[int] = field(default_factory=list)
    outliers_vision: list[int] = field(default_factory=list)
    outliers_text: list[int] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # file path or "<object>", for error messages and default labels

    @property
    def model(self) -> str:
        """The model name recorded in the metadata, or '' if none."""
        model = self.metadata.get("model", "")
        if isinstance(model, dict):
            model = model.get("name") or model.get("id") or model.get("path") or ""
        return str(model)

    @property
    def repeats(self) -> dict[str, float] | None:
        """MIR over seeded subsets (metadata 'repeats': mean, std, min, max, repeats, n), if any."""
        info = self.metadata.get("repeats")
        keys = ("mean", "std", "min", "max", "repeats")
        if not isinstance(info, dict) or not all(_is_number(info.get(k)) for k in keys):
            return None
        return {k: float(info[k]) for k in (*keys, "n") if _is_number(info.get(k))}

    @property
    def n_samples(self) -> int | None:
        """How many image/text pairs were used, from the metadata or settings, if recorded."""
        for value in (self.metadata.get("n_samples"), self.metadata.get("samples")):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, list):
                return len(value)
        n = self.settings.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) else None


def _is_number(value: object) -> bool:
    """A finite int or float (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path) -> dict[str, Any]:
    """Read a result JSON file; a clear ValueError if it is missing or malformed."""
    if not path.is_file():
        raise ValueError(f"result file {os.fspath(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"result file {os.fspath(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"result file {os.fspath(path)!r}: expected a JSON object")
    return data


def _number_list(data: dict[str, Any], key: str, where: str, k: int | None) -> list[float]:
    """A list of finite numbers under `key` (length k when given)."""
    value = data[key]
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise ValueError(f"{where}: {key!r} must be a list of finite numbers")
    if k is not None and len(value) != k:
        raise ValueError(f"{where}: {key!r} has {len(value)} entries but 'layers' has {k}")
    return list(value)


def as_run(result: object) -> RunView:
    """Accept an MIRResult-like object (with `to_dict`), a dict, or a JSON path; validate it."""
    if isinstance(result, RunView):
        return result
    if isinstance(result, str | os.PathLike):
        where = os.fspath(result)
        data = _read_json(Path(result))
    elif isinstance(result, dict):
        where, data = "<dict>", result
    elif callable(getattr(result, "to_dict", None)):
        where, data = f"<{type(result).__name__}>", result.to_dict()  # type: ignore[attr-defined]
    else:
        raise ValueError(f"not an MIR result: {type(result).__name__}")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ValueError(f"{where}: not an MIR result (missing keys: {', '.join(missing)})")
    mir = data["mir"]
    if not _is_number(mir):
        raise ValueError(f"{where}: 'mir' must be a finite number, got {mir!r}")
    layers = data["layers"]
    if not isinstance(layers, list) or not layers or not all(type(v) is int for v in layers):
        raise ValueError(f"{where}: 'layers' must be a non-empty list of integers")
    k = len(layers)
    extra = {key: _number_list(data, key, where, k) for key in OPTIONAL_LISTS if key in data}
    for key in ("settings", "metadata"):
        if not isinstance(data.get(key, {}), dict):
            raise ValueError(f"{where}: {key!r} must be an object")
    return RunView(
        mir=float(mir),
        per_layer=[float(v) for v in _number_list(data, "per_layer", where, k)],
        layers=list(layers),
        settings=dict(data.get("settings", {})),
        metadata=dict(data.get("metadata", {})),
        source=where,
        **extra,  # type: ignore[arg-type]
    )


def default_labels(runs: list[RunView]) -> list[str]:
    """Labels for runs: file stems when they differ, else the model names, else run1, run2 ..."""
    for candidates in (
        [Path(r.source).stem if not r.source.startswith("<") else "" for r in runs],
        [r.model for r in runs],
    ):
        if all(candidates) and len(set(candidates)) == len(candidates):
            return candidates
    return [f"run{i + 1}" for i in range(len(runs))]


def check_labels(runs: list[RunView], labels: list[str] | None) -> list[str]:
    """Validate user labels (one per run) or make default ones."""
    if not runs:
        raise ValueError("no results given")
    if labels is None:
        return default_labels(runs)
    if len(labels) != len(runs):
        raise ValueError(f"got {len(labels)} labels for {len(runs)} results (need one per result)")
    return [str(label) for label in labels]
