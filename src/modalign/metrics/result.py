"""The result of an MIR computation: per-layer numbers, settings and free-form metadata.

`MIRResult` is the one definition of the format: its fields (with their JSON types, written in the
field metadata) drive the validation of loaded results and the JSON Schema (`result_schema()`),
so the schema, the validator and the dataclass cannot drift apart. Reports read MIRResult objects.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json
from modalign.errors import DataError, MetricError

__all__ = ["PER_LAYER_FIELDS", "MIRResult", "result_schema"]

_NUMBER = {"type": "number"}
_COUNT = {"type": "integer", "minimum": 0}


def _spec(doc: str, schema: dict[str, Any], per_layer: bool = False) -> dict[str, Any]:
    """Field metadata: its description, the JSON schema of one value (or of each per-layer item)."""
    return {"doc": doc, "schema": schema, "per_layer": per_layer}


@dataclass
class MIRResult:
    """MIR = log10(sum of per-layer Fréchet distances after text-centric scaling); lower is better.

    Args (fields):
        mir: log10 of the summed per-layer distances.
        per_layer ... cosine_gap: one entry per scored layer, in the order of `layers`.
        settings: how it was computed (sqrt backend, outlier handling, template, N, seed ...).
        metadata: provenance (model, samples, data source, versions); free-form.

    Example:
        >>> r = MIRResult.load({"mir": 0.0, "per_layer": [1.0], "layers": [1], "alpha": [0.5],
        ...     "n_vision": [10], "n_text": [12], "outliers_vision": [0], "outliers_text": [0],
        ...     "centroid_gap": [0.1], "cosine_gap": [0.01], "settings": {}, "metadata": {}})
        >>> r.total
        1.0
    """

    mir: float = field(metadata=_spec("log10 of the summed per-layer Fréchet distances", _NUMBER))
    per_layer: list[float] = field(
        metadata=_spec("FD_k between the scaled vision and text tokens", _NUMBER, True)
    )
    layers: list[int] = field(
        metadata=_spec(
            "hidden_states index of each entry (1 = output of decoder layer 1)", _COUNT, True
        )
    )
    alpha: list[float] = field(
        metadata=_spec(
            "text-centric scale 1 / mean text-token norm",
            {"type": "number", "exclusiveMinimum": 0},
            True,
        )
    )
    n_vision: list[int] = field(
        metadata=_spec(
            "vision tokens used after outlier handling", {"type": "integer", "minimum": 2}, True
        )
    )
    n_text: list[int] = field(
        metadata=_spec(
            "text tokens used after outlier handling", {"type": "integer", "minimum": 2}, True
        )
    )
    outliers_vision: list[int] = field(
        metadata=_spec("vision tokens outside the 3-sigma norm band", _COUNT, True)
    )
    outliers_text: list[int] = field(
        metadata=_spec("text tokens outside the 3-sigma norm band", _COUNT, True)
    )
    centroid_gap: list[float] = field(
        metadata=_spec("||mu_v - mu_t|| after scaling", {"type": "number", "minimum": 0}, True)
    )
    cosine_gap: list[float] = field(metadata=_spec("1 - cos(mu_v, mu_t)", _NUMBER, True))
    settings: dict[str, Any] = field(
        default_factory=dict,
        metadata=_spec("how MIR was computed (recorded once, here)", {"type": "object"}),
    )
    metadata: dict[str, Any] = field(
        default_factory=dict,
        metadata=_spec("provenance: model, samples, data, versions", {"type": "object"}),
    )

    def __post_init__(self) -> None:
        _validate(asdict(self), "MIRResult", MetricError)

    @property
    def total(self) -> float:
        """Sum of per-layer distances (10 ** mir)."""
        return math.fsum(self.per_layer)

    @property
    def model(self) -> str:
        """The model recorded in the metadata, or '' if none."""
        return str(self.metadata.get("model", "") or "")

    @property
    def n_samples(self) -> int | None:
        """How many image/text pairs were scored, if recorded."""
        n = self.metadata.get("n_samples")
        if isinstance(n, int) and not isinstance(n, bool):
            return n
        samples = self.metadata.get("samples")
        return len(samples) if isinstance(samples, list) else None

    @property
    def repeats(self) -> dict[str, float] | None:
        """MIR over seeded subsets (metadata 'repeats': mean, std, min, max, repeats, n), if any."""
        info = self.metadata.get("repeats")
        keys = ("mean", "std", "min", "max", "repeats")
        if not isinstance(info, dict) or not all(_finite(info.get(k)) for k in keys):
            return None
        return {k: float(info[k]) for k in (*keys, "n") if _finite(info.get(k))}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "<dict>") -> MIRResult:
        """Validate a dict (e.g. parsed JSON) and build the result; DataError names what is wrong."""
        if not isinstance(data, dict):
            raise DataError(f"{where}: not an MIR result ({type(data).__name__})")
        _validate(data, where, DataError)
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        return cls(**values)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a reader never sees a half-written file)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> MIRResult:
        """Read and validate a result JSON file."""
        where = os.fspath(path)
        if not Path(path).is_file():
            raise DataError(f"result file {where!r} does not exist")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"result file {where!r} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DataError(f"result file {where!r}: expected a JSON object")
        return cls.from_dict(data, where)

    @classmethod
    def load(cls, result: MIRResult | dict[str, Any] | str | os.PathLike[str]) -> MIRResult:
        """An MIRResult from itself, a dict or a JSON path (what reports accept)."""
        if isinstance(result, MIRResult):
            return result
        if isinstance(result, dict):
            return cls.from_dict(result)
        if isinstance(result, str | os.PathLike):
            return cls.from_json(result)
        raise DataError(f"not an MIR result: {type(result).__name__}")


PER_LAYER_FIELDS = tuple(f.name for f in fields(MIRResult) if f.metadata["per_layer"])
_REQUIRED = tuple(f.name for f in fields(MIRResult) if f.name not in ("settings", "metadata"))


def _finite(value: object) -> bool:
    """A finite int or float (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _value_ok(value: object, schema: dict[str, Any]) -> bool:
    """Whether one value satisfies its (tiny) field schema: type and bounds."""
    kind = schema["type"]
    if kind == "object":
        return isinstance(value, dict)
    if kind == "integer" and (type(value) is not int):
        return False
    if not _finite(value):
        return False
    if "minimum" in schema and value < schema["minimum"]:
        return False
    return not ("exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"])


def _validate(data: dict[str, Any], where: str, error: type[Exception]) -> None:
    """Check every field against its metadata; raise `error` naming the first problem."""
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        raise error(f"{where}: not an MIR result (missing keys: {', '.join(missing)})")
    layers = data["layers"]
    if not isinstance(layers, list) or not layers:
        raise error(f"{where}: 'layers' must be a non-empty list of integers")
    for f in fields(MIRResult):
        if f.name not in data:
            continue
        value, schema = data[f.name], f.metadata["schema"]
        if not f.metadata["per_layer"]:
            if not _value_ok(value, schema):
                raise error(f"{where}: {f.name!r} must be {_describe(schema)}, got {value!r}")
            continue
        if not isinstance(value, list) or not all(_value_ok(v, schema) for v in value):
            raise error(f"{where}: {f.name!r} must be a list of {_describe(schema, plural=True)}")
        if len(value) != len(layers):
            raise error(
                f"{where}: {f.name!r} has {len(value)} entries but 'layers' has {len(layers)}"
            )
    _check_consistent(data, where, error)


def _check_consistent(data: dict[str, Any], where: str, error: type[Exception]) -> None:
    """The numbers agree with each other: MIR is log10 of the summed per-layer distances, and a
    per-layer Fréchet distance is not negative (beyond rounding) unless the recorded backend
    allows it (`official`)."""
    per_layer = data["per_layer"]
    total = math.fsum(per_layer)
    if not total > 0 or abs(math.log10(total) - data["mir"]) > 1e-6 * max(1.0, abs(data["mir"])):
        raise error(
            f"{where}: 'mir' ({data['mir']!r}) is not log10 of the summed 'per_layer' "
            f"({total!r}): the result is inconsistent"
        )
    sqrt = (data.get("settings") or {}).get("sqrt", "exact")
    from modalign.metrics.sqrt_backends import SQRT_BACKENDS

    allows = sqrt in SQRT_BACKENDS and SQRT_BACKENDS[sqrt].negative_layers
    if not allows and min(per_layer) < -1e-6 * total:
        raise error(
            f"{where}: a per-layer distance is negative ({min(per_layer)!r}) although "
            f"sqrt={sqrt!r} gives Fréchet distances: the result is damaged"
        )


def _describe(schema: dict[str, Any], plural: bool = False) -> str:
    """'a finite number', 'integers >= 2', 'an object' ..."""
    kind = {"number": "finite number", "integer": "integer", "object": "object"}[schema["type"]]
    bound = (
        f" >= {schema['minimum']}"
        if "minimum" in schema
        else f" > {schema['exclusiveMinimum']}"
        if "exclusiveMinimum" in schema
        else ""
    )
    if plural:
        return f"{kind}s{bound}"
    return f"{'an' if kind[0] in 'aeio' else 'a'} {kind}{bound}"


def result_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a written MIR result, derived from MIRResult's fields.

    Returns:
        The schema as a dict (every field's type, bounds and description; the required keys).

    >>> schema = result_schema()
    >>> schema["required"][:3], schema["properties"]["mir"]["type"]
    (['mir', 'per_layer', 'layers'], 'number')
    """
    from modalign.metrics.outliers import OUTLIER_MODES
    from modalign.metrics.sqrt_backends import SQRT_BACKENDS

    properties: dict[str, Any] = {}
    for f in fields(MIRResult):
        schema, doc = dict(f.metadata["schema"]), f.metadata["doc"]
        if f.metadata["per_layer"]:
            properties[f.name] = {
                "type": "array",
                "items": schema,
                "minItems": 1,
                "description": doc,
            }
        else:
            properties[f.name] = {**schema, "description": doc}
    properties["settings"]["properties"] = {
        "sqrt": {"enum": SQRT_BACKENDS.names()},
        "outliers": {"enum": list(OUTLIER_MODES)},
    }
    properties["settings"]["required"] = ["sqrt", "outliers"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "modalign/mir_result.schema.json",
        "title": "modalign MIR result",
        "description": MIRResult.__doc__.splitlines()[0],
        "type": "object",
        "required": [f.name for f in fields(MIRResult)],
        "properties": properties,
    }
