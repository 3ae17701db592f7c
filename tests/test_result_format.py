"""MIRResult is the one result format: loading from dicts/files, validation, the derived schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalign.metrics import MIRResult
from modalign.metrics.result import result_schema
from modalign.report import check_labels, default_labels
from tests.report.conftest import make_result


def test_dict_file_and_object_agree(tmp_path: Path) -> None:
    data = make_result()
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    a, b = MIRResult.load(data), MIRResult.load(path)
    assert a == b and MIRResult.load(a) is a
    assert b.per_layer == data["per_layer"] and b.model == "tiny-llava" and b.n_samples == 20
    out = tmp_path / "again.json"
    b.to_json(out)
    assert json.loads(out.read_text()) == data


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d.pop("per_layer"), "missing keys: per_layer"),
        (lambda d: d.pop("cosine_gap"), "missing keys: cosine_gap"),
        (lambda d: d.update(mir=float("nan")), "'mir' must be a finite number"),
        (lambda d: d.update(mir="3.1"), "'mir' must be a finite number"),
        (lambda d: d.update(layers=[]), "non-empty list of integers"),
        (lambda d: d.update(per_layer=[1.0]), "'per_layer' has 1 entries but 'layers' has 6"),
        (lambda d: d.update(n_text=[1, 2]), "'n_text' must be a list of integers >= 2"),
        (lambda d: d.update(n_text=[5] * 5), "'n_text' has 5 entries"),
        (lambda d: d.update(alpha=["x"] * 6), "'alpha' must be a list of finite numbers > 0"),
        (lambda d: d.update(layers=[1.5] * 6), "'layers' must be a list of integers"),
        (lambda d: d.update(metadata=[1]), "'metadata' must be an object"),
    ],
)
def test_bad_results_are_named(mutate, pattern: str) -> None:
    data = make_result()
    mutate(data)
    with pytest.raises(ValueError, match=pattern):
        MIRResult.load(data)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        MIRResult.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        MIRResult.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        MIRResult.load(bad)
    with pytest.raises(ValueError, match="not an MIR result: int"):
        MIRResult.load(3)


def test_schema_is_derived_from_the_dataclass() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = result_schema()
    from dataclasses import fields

    assert set(schema["required"]) == {f.name for f in fields(MIRResult)}
    data = make_result()
    jsonschema.validate(data, schema)
    for key in ("n_vision", "alpha"):
        broken = make_result()
        broken[key][0] = 0
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
        with pytest.raises(ValueError):  # the dataclass refuses what the schema refuses
            MIRResult.load(broken)


def test_labels(tmp_path: Path) -> None:
    runs = [MIRResult.load(make_result(model=m)) for m in ("m1", "m2")]
    assert default_labels(runs, ["x/base.json", "y/moca.json"]) == ["base", "moca"]
    assert default_labels(runs, ["x/r.json", "y/r.json"]) == ["m1", "m2"]
    assert default_labels([runs[0], runs[0]]) == ["run1", "run2"]
    with pytest.raises(ValueError, match="got 1 labels for 2 results"):
        check_labels(runs, ["only"])
    with pytest.raises(ValueError, match="no results"):
        check_labels([], None)
