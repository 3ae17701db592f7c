"""The shipped demo stands in for what a run leaves out, decided once (`resolve_probe`)."""

from __future__ import annotations

from pathlib import Path

from modalign.assets import default_dir, default_model_path
from modalign.cli.probe_options import ProbeData, resolve_probe


def test_no_model_no_data_is_the_demo_on_its_eval_set():
    probe = resolve_probe(None, ProbeData(), demo_model=True)
    eval_dir = default_dir() / "eval"
    assert probe.model == str(default_model_path())
    assert (probe.data.images, probe.data.texts) == (eval_dir / "images", eval_dir / "passages.txt")
    assert probe.note.startswith("no --model given: scoring the shipped demo model")
    assert f"on its held-out eval set ({eval_dir})" in probe.note
    assert probe.data.source().description["kind"] == "folder"


def test_given_data_or_model_is_kept():
    data = ProbeData(pairs=Path("pairs.jsonl"))
    probe = resolve_probe(None, data, demo_model=True)
    assert probe.data == data and probe.note.endswith("on the data given")
    own = resolve_probe("my/model", ProbeData(), demo_model=True)
    assert own.model == "my/model" and own.data == ProbeData() and own.note is None


def test_validate_without_data_measures_on_the_demo_eval_set():
    probe = resolve_probe(None, ProbeData(strict=True), demo_model=False)
    assert probe.model is None and probe.data.strict
    assert probe.data.images == default_dir() / "eval" / "images"
    assert probe.note.startswith("no probe data given: measuring on the shipped demo's held-out")
    given = ProbeData(dataset="some/dataset")
    assert resolve_probe(None, given, demo_model=False) == resolve_probe(
        None, given, demo_model=False
    )
    assert resolve_probe(None, given, demo_model=False).note is None
