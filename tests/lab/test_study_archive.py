"""A study's point records: a study resumes and its report regenerates from them where the runs
folder is gone, only for exactly the archived cycle and probe."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import modalign_lab.studies.jobs as jobs_mod
import modalign_lab.studies.study as study_mod
import pytest
from modalign_lab.studies.archive import archived_measure, read_record, record_path
from modalign_lab.studies.catalog import recipe_change
from modalign_lab.studies.study import Variant, run_study

from modalign.data.pairs import Pair
from modalign.errors import DataError
from modalign.evidence.cache import data_fingerprint
from modalign.evidence.validate import ValidateSettings
from tests.lab.test_study import _tiny


def _no_training(folder, cfg, data=None):
    raise AssertionError(f"{folder} was trained although its record is archived")


def test_a_study_regenerates_from_its_records_without_the_runs_folder(tmp_path, monkeypatch):
    prepared = []

    def prepare(root, data, cycle, seed):  # e.g. SEA labels: slow, and the configs need them
        prepared.append(seed)
        return {"lr": 2e-3}

    def lr_from_resources(recipe, resources):
        return replace(recipe, train=replace(recipe.train, lr=resources["lr"]))

    study = _tiny(
        "toolkit",
        sft_variants=(Variant("lowlr", recipe_change(lr=1e-5), "SFT lr 1e-5"),),
        sft_only={"lowlr": ("linear",)},
        prepare=prepare,
    )
    study = replace(study, variants=(*study.variants, Variant("fast", lr_from_resources)))
    runs, docs, archive = tmp_path / "runs", tmp_path / "docs", tmp_path / "points"
    variants = ["baseline", "linear", "fast"]
    summary = run_study(study, runs, [0], docs, variants=variants, archive=archive)
    assert prepared == [0]
    fast = json.loads(record_path(archive, "toolkit", "fast", 0).read_text())
    assert fast["report"]["config"]["pretrain"]["train"]["lr"] == 2e-3
    record = json.loads(record_path(archive, "toolkit", "linear", 0).read_text())
    assert set(record["evals"]) == {"sft", "lowlr"}
    assert record["validate"]["record"] is not None
    assert "pretrain/mir_monitor/mir_curve.json" in record["files"]
    report = (docs / "toolkit.md").read_text()

    shutil.rmtree(runs)  # another machine: only the committed records are left
    (docs / "toolkit.md").unlink()
    monkeypatch.setattr(jobs_mod, "run_cycle", _no_training)
    monkeypatch.setattr(jobs_mod, "finetune", _no_training)
    again = run_study(study, runs, [0], docs, variants=variants, archive=archive)
    assert again == summary
    assert prepared == [0]  # every point restored: nothing to prepare
    assert (docs / "toolkit.md").read_text() == report
    assert not (runs / "toolkit" / "linear" / "seed0" / "pretrain" / "model").exists()
    assert (runs / "toolkit" / "checkpoints-sft.jsonl").read_text() == ""  # none present


def test_a_record_of_another_cycle_is_not_restored(tmp_path, monkeypatch):
    study = _tiny("toolkit")
    runs, docs, archive = tmp_path / "runs", tmp_path / "docs", tmp_path / "points"
    run_study(study, runs, [0], docs, variants=["baseline"], archive=archive)
    shutil.rmtree(runs)
    longer = replace(study.cycle.pretrain, train=replace(study.cycle.pretrain.train, steps=2))
    changed = replace(study, cycle=replace(study.cycle, pretrain=longer))
    trained = []

    def stop(folder, cfg, data=None):
        trained.append(folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_mod, "run_cycle", stop)
    with pytest.raises(KeyboardInterrupt):
        run_study(changed, runs, [0], docs, variants=["baseline"], archive=archive)
    assert trained == [runs / "toolkit" / "baseline" / "seed0"]
    # nor one that lacks an SFT evaluation the study needs
    path = record_path(archive, "toolkit", "baseline", 0)
    config = json.loads(path.read_text())["report"]["config"]
    assert read_record(path, config, ["sft"]) is not None
    assert read_record(path, config, ["sft", "lowlr"]) is None
    assert read_record(path, {**config, "seed": 5}, ["sft"]) is None


def test_an_archived_measurement_is_used_only_for_its_probe_and_settings():
    from PIL import Image

    pairs = [Pair(Image.new("RGB", (8, 8), (i, 0, 0)), f"{i}.png", f"a red square {i}", i)
             for i in range(3)]  # fmt: skip
    settings = ValidateSettings(progress=False)
    kept = {"data": data_fingerprint(pairs), "settings": {**settings.identity(), "n": 3},
            "record": {"mir": 1.5}}  # fmt: skip
    fresh = []

    def fallback(model, p, s):
        fresh.append(model)
        return {"mir": 0.0}

    measure = archived_measure({"gone": kept}, pairs, settings, fallback)
    assert measure("gone", pairs, settings) == {"mir": 1.5}
    assert measure("here", pairs, settings) == {"mir": 0.0} and fresh == ["here"]
    other_seed = replace(settings, seed=settings.seed + 1)
    for p, s in ((pairs[:2], settings), (pairs, other_seed)):  # other probe, other settings
        with pytest.raises(DataError, match="other probe data or settings"):
            archived_measure({"gone": kept}, p, s, fallback)("gone", p, s)
    with pytest.raises(DataError, match="checkpoint is gone"):
        archived_measure({"gone": {}}, pairs, settings, fallback)("gone", pairs, settings)
    assert fresh == ["here"]  # an archived model is never measured


def test_study_cli_archives_beside_the_report_unless_told(tmp_path, monkeypatch):
    from modalign.cli import main

    seen = []
    monkeypatch.setattr(study_mod, "run_study",
                        lambda *a, **k: seen.append(k) or {"sft": {}})  # fmt: skip
    base = ["lab", "study", "toolkit", "--out", str(tmp_path), "--report-dir", str(tmp_path / "d")]
    assert main(base) == 0
    assert main([*base, "--archive", str(tmp_path / "a")]) == 0
    assert main([*base, "--no-archive", "--jobs", "2", "--threads", "1"]) == 0
    assert [k["archive"] for k in seen] == [tmp_path / "d" / "points", tmp_path / "a", None]
    assert [(k["jobs"], k["threads"]) for k in seen] == [(1, None), (1, None), (2, 1)]
