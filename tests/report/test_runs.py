"""Result normalisation: dicts, JSON files and MIRResult objects; clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalign.report import as_run
from modalign.report.runs import check_labels, default_labels


def test_dict_and_file_agree(result_factory, tmp_path: Path) -> None:
    data = result_factory()
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    from_dict, from_file = as_run(data), as_run(path)
    assert from_dict.per_layer == from_file.per_layer == data["per_layer"]
    assert from_file.mir == pytest.approx(data["mir"]) and from_file.source == str(path)
    assert from_file.model == "tiny-llava" and from_file.n_samples == 20


def test_mir_result_object_accepted(result_factory) -> None:
    result_mod = pytest.importorskip("modalign.metrics.result")
    data = result_factory()
    k = len(data["layers"])
    obj = result_mod.MIRResult(
        **{key: data[key] for key in ("mir", "per_layer", "layers", "alpha", "n_vision", "n_text")},
        outliers_vision=data["outliers_vision"],
        outliers_text=data["outliers_text"],
        centroid_gap=[0.0] * k,
        cosine_gap=[0.0] * k,
        settings=data["settings"],
        metadata=data["metadata"],
    )
    run = as_run(obj)
    assert run.layers == data["layers"] and run.n_text == data["n_text"]


def test_optional_lists_may_be_absent(result_factory) -> None:
    data = {key: result_factory()[key] for key in ("mir", "per_layer", "layers")}
    run = as_run(data)
    assert run.alpha == [] and run.model == "" and run.n_samples is None


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d.pop("per_layer"), "missing keys: per_layer"),
        (lambda d: d.update(mir=float("nan")), "'mir' must be a finite number"),
        (lambda d: d.update(mir="3.1"), "'mir' must be a finite number"),
        (lambda d: d.update(layers=[]), "non-empty list of integers"),
        (lambda d: d.update(per_layer=[1.0]), "'per_layer' has 1 entries but 'layers' has 6"),
        (lambda d: d.update(n_text=[1, 2]), "'n_text' has 2 entries"),
        (lambda d: d.update(alpha=["x"] * 6), "'alpha' must be a list of finite numbers"),
        (lambda d: d.update(metadata=[1]), "'metadata' must be an object"),
    ],
)
def test_bad_results(result_factory, mutate, pattern: str) -> None:
    data = result_factory()
    mutate(data)
    with pytest.raises(ValueError, match=pattern):
        as_run(data)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        as_run(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        as_run(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        as_run(bad)
    with pytest.raises(ValueError, match="not an MIR result: int"):
        as_run(3)


def test_labels(result_factory, result_files: list[Path]) -> None:
    runs = [as_run(p) for p in result_files]
    assert default_labels(runs) == ["base", "moca"]
    same_stem = [as_run(result_factory(model="m1")), as_run(result_factory(model="m2"))]
    assert default_labels(same_stem) == ["m1", "m2"]
    assert default_labels([as_run(result_factory())] * 2) == ["run1", "run2"]
    with pytest.raises(ValueError, match="got 1 labels for 2 results"):
        check_labels(runs, ["only"])
    with pytest.raises(ValueError, match="no results"):
        check_labels([], None)
