"""lmms-eval results files (in lmms-eval's own layout, tests/evidence/lmms_fixture.py): found in a
folder, read, mapped to checkpoints by their pretrained= path (or through a `modalign train
--stage sft` record to the pre-trained model), task and metric chosen, newest file kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modalign.errors import ConfigError, DataError
from modalign.evidence.lmms_results import (
    find_eval_results,
    is_metric_key,
    pretrained_of,
    read_eval_results,
)
from modalign.evidence.lmms_scores import LmmsEvalScores, fine_tuned_from, lmms_eval_scores
from tests.evidence.lmms_fixture import results_json, scores_for, write_results


def _models(root: Path, names=("ck0", "ck1", "ck2", "ck3")) -> list[Path]:
    out = []
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.json").write_text("{}")
        out.append(root / name)
    return out


def _layout(tmp_path: Path, k: int = 4) -> tuple[Path, list[Path]]:
    """k checkpoints, each scored by one lmms-eval run on mme, pope and textvqa_val."""
    models = _models(tmp_path / "runs", [f"ck{i}" for i in range(k)])
    out = tmp_path / "lmms_out"
    for i, m in enumerate(models):
        write_results(out, str(m), scores_for(i))
    return out, models


def _table(found, models=(), **selection):
    return lmms_eval_scores(found, LmmsEvalScores(scores_from=Path("x"), **selection), models)


def test_files_are_found_where_lmms_eval_writes_them(tmp_path):
    out, models = _layout(tmp_path)
    (out / "submissions").mkdir()  # a task's submission file, named like results
    (out / "submissions" / "mmbench_en_dev_results.json").write_text('{"answers": []}')
    found, skipped = find_eval_results(out)
    assert [r.path for r in found] == sorted(
        out / f"runs__{m.name}" / "20250314_101500_results.json" for m in models
    )
    assert len(skipped) == 1 and "mmbench_en_dev_results.json" in skipped[0]
    assert [r.model for r in found] == [str(m) for m in models]
    assert found[0].stamp == "20250314_101500"
    one, notes = find_eval_results(found[0].path)  # a file on its own
    assert one[0].results == found[0].results and notes == []


def test_model_args_and_metric_keys():
    assert pretrained_of("pretrained=/a/b,conv_template=vicuna_v1") == "/a/b"
    assert pretrained_of('device_map=auto,pretrained=x/y,extra={"k": 1, "j": [1,2]}') == "x/y"
    assert pretrained_of("model_version=gpt-4o,foo='a,b'") is None
    assert pretrained_of({"pretrained": "m/dir", "device": "cuda"}) == "m/dir"
    assert pretrained_of(None) is None and pretrained_of("pretrained=") is None
    assert is_metric_key("exact_match,none") and is_metric_key("pope_f1_score,none")
    for key in ("exact_match_stderr,none", "exact_match_stderr_clt,none",
                "exact_match_stderr_clustered,none", "alias", "samples", " "):  # fmt: skip
        assert not is_metric_key(key), key


def test_metrics_and_the_primary_metric(tmp_path):
    out, _ = _layout(tmp_path)
    r = find_eval_results(out)[0][1]
    assert r.tasks() == ["mme", "pope", "textvqa_val"]
    assert r.metrics("textvqa_val") == ["exact_match,none"]  # submission is null: no number
    assert r.primary("mme") == "mme_perception_score,none"  # first of mme.yaml's metric_list
    assert r.primary("pope") == "pope_accuracy,none"
    assert r.primary("textvqa_val") == "exact_match,none"
    assert r.score("mme", "mme_cognition_score,none") == 255.0
    with pytest.raises(DataError, match="has no metric 'bleu,none'"):
        r.score("pope", "bleu,none")
    with pytest.raises(DataError, match="not a number"):
        r.score("textvqa_val", "submission,none")


def test_primary_follows_the_first_filter_and_falls_back_to_the_first_number(tmp_path):
    data = results_json("m", scores_for(0), "20250101_000000")
    entry = data["results"]["textvqa_val"]
    entry["exact_match,flexible-extract"] = 0.5
    data["configs"]["textvqa_val"]["filter_list"] = [{"name": "flexible-extract", "filter": []}]
    data["results"]["mmbench"] = {"alias": "mmbench", "gpt_eval_score,none": 61.0,
                                  "gpt_eval_score_stderr,none": "N/A"}  # fmt: skip
    path = tmp_path / "20250101_000000_results.json"
    path.write_text(json.dumps(data))
    r = read_eval_results(path)
    assert r.primary("textvqa_val") == "exact_match,flexible-extract"
    assert r.primary("mmbench") == "gpt_eval_score,none"  # a group: no config of its own


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not a JSON file"),
        ('{"results": []}', "no 'results' object"),
        ('{"results": {}}', "no 'config' with 'model_args'"),
        ('{"results": {}, "config": {"model_args": "model_version=gpt-4o"}}', "no pretrained=PATH"),
    ],
)
def test_a_file_that_is_not_lmms_eval_results_is_refused(tmp_path, content, message):
    path = tmp_path / "20250101_000000_results.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        find_eval_results(path)
    with pytest.raises(DataError, match=r"no lmms-eval results file .*1 file\(s\) named so"):
        find_eval_results(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        find_eval_results(tmp_path / "missing")


def test_checkpoints_are_the_models_named_one_group_per_task(tmp_path):
    out, _ = _layout(tmp_path)
    table = _table(find_eval_results(out)[0])
    assert table.tasks == {
        "mme": {"metric": "mme_perception_score,none", "chosen_by": "the task's first metric"},
        "pope": {"metric": "pope_accuracy,none", "chosen_by": "the task's first metric"},
        "textvqa_val": {"metric": "exact_match,none", "chosen_by": "the task's first metric"},
    }
    got = {(c.group, Path(c.model).name): c.score for c in table.checkpoints}
    want = {(t, f"ck{i}"): scores_for(i)[t][m.split(",")[0]]
            for i in range(4) for t, m in (("mme", "mme_perception_score"),
                                            ("pope", "pope_accuracy"),
                                            ("textvqa_val", "exact_match"))}  # fmt: skip
    assert got == pytest.approx(want)
    assert table.warnings == [] and len(table.files) == 4
    assert table.checkpoints[0].scored["metric"] == "mme_perception_score,none"


def test_given_checkpoints_match_by_resolved_path(tmp_path, monkeypatch):
    out, models = _layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    given = ["runs/ck0", "runs/../runs/ck1", str(models[2]), "runs/ck_missing"]
    table = _table(find_eval_results(out)[0], given)
    assert list(dict.fromkeys(c.model for c in table.checkpoints)) == given[:3]
    assert any(w.startswith(f"{out / 'runs__ck3'}") and "no checkpoint given" in w
               for w in table.warnings)  # fmt: skip
    assert any("checkpoint runs/ck_missing: no lmms-eval result" in w for w in table.warnings)
    with pytest.raises(DataError, match="none of the 4 lmms-eval results file"):
        _table(find_eval_results(out)[0], ["elsewhere/a", "elsewhere/b", "elsewhere/c"])


def test_task_and_metric_selection(tmp_path):
    found = find_eval_results(_layout(tmp_path)[0])[0]
    table = _table(found, task=("pope",), metric=("pope_f1_score",))
    assert {c.group for c in table.checkpoints} == {"pope"}
    assert [c.score for c in table.checkpoints] == pytest.approx([0.85, 0.84, 0.83, 0.82])
    table = _table(found, metric=("mme=mme_cognition_score,none",))
    assert table.tasks["mme"] == {"metric": "mme_cognition_score,none", "chosen_by": "--metric"}
    assert table.tasks["pope"]["metric"] == "pope_accuracy,none"
    table = _table(found, metric=("exact_match",))  # only textvqa has it: the others left out
    assert list(table.tasks) == ["textvqa_val"]
    assert sum("has no metric 'exact_match'; left out" in w for w in table.warnings) == 2
    with pytest.raises(DataError, match=r"task\(s\) vqav2 not in the results .*found: mme, pope"):
        _table(found, task=("vqav2",))
    with pytest.raises(DataError, match="task 'pope' has no metric 'exact_match'"):
        _table(found, task=("pope",), metric=("exact_match",))
    with pytest.raises(DataError, match="no task of the results has metric 'bleu'"):
        _table(found, metric=("bleu",))


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"metric": ("a", "b")}, "given 2 times for every task"),
        ({"metric": ("mme=a", "mme=b")}, "each task once"),
        ({"metric": ("mme=",)}, "each task once, with a key"),
        ({"task": ("pope",), "metric": ("mme=a",)}, "no --task selects"),
        ({"scores_from": None, "task": ("pope",)}, "give --scores-from"),
    ],
)
def test_bad_selections_are_refused(selection, message):
    with pytest.raises(ConfigError, match=message):
        LmmsEvalScores(**{"scores_from": Path("x"), **selection})


def test_a_bare_metric_under_two_filters_is_ambiguous(tmp_path):
    data = results_json("m", scores_for(0), "20250101_000000")
    data["results"]["textvqa_val"]["exact_match,flexible-extract"] = 0.5
    folder = tmp_path / "out"
    for i in range(3):
        (folder / f"m{i}").mkdir(parents=True)
        data["config"]["model_args"] = f"pretrained=model{i}"
        (folder / f"m{i}" / "20250101_000000_results.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="under several filters"):
        _table(find_eval_results(folder)[0], task=("textvqa_val",), metric=("exact_match",))


def test_the_newest_file_of_a_checkpoint_is_used_and_said(tmp_path):
    out, models = _layout(tmp_path, 3)
    newer = scores_for(9)
    write_results(out, str(models[1]), {"pope": newer["pope"]}, stamp="20250401_080000")
    table = _table(find_eval_results(out)[0])
    pope = {Path(c.model).name: c.score for c in table.checkpoints if c.group == "pope"}
    assert pope["ck1"] == pytest.approx(newer["pope"]["pope_accuracy"])
    mme = {Path(c.model).name: c.score for c in table.checkpoints if c.group == "mme"}
    assert mme["ck1"] == pytest.approx(scores_for(1)["mme"]["mme_perception_score"])
    [line] = [w for w in table.warnings if "results files" in w]
    assert "task 'pope': 2 results files; the newest" in line and "20250401_080000" in line


def test_fewer_than_three_scored_checkpoints_and_lower_is_better(tmp_path):
    out, _ = _layout(tmp_path, 2)
    with pytest.raises(DataError, match="2 checkpoint"):
        _table(find_eval_results(out)[0])
    out, _ = _layout(tmp_path / "b", 3)
    for path in out.rglob("*_results.json"):
        data = json.loads(path.read_text())
        data["higher_is_better"]["pope"]["pope_yes_ratio"] = False
        path.write_text(json.dumps(data))
    table = _table(find_eval_results(out)[0], metric=("pope=pope_yes_ratio,none",))
    assert any("pope_yes_ratio,none as lower-is-better" in w for w in table.warnings)


def _sft_run(root: Path, name: str, started_from: Path, stage: str = "sft") -> Path:
    """A run folder as `modalign train` leaves it: RUN/model and RUN/stage.json."""
    (root / name / "model").mkdir(parents=True)
    (root / name / "model" / "config.json").write_text("{}")
    inputs = {"model": str(started_from.resolve()), "data": "/data/sft.json", "stage": stage}
    record = {"settings": {"stage": {"name": stage}, "inputs": inputs}, "steps": 2}
    (root / name / "stage.json").write_text(json.dumps(record))
    return root / name / "model"


def test_a_fine_tuned_model_maps_to_the_checkpoint_it_was_fine_tuned_from(tmp_path):
    pts = [p / "model" for p in _models(tmp_path / "runs", ["pt_a", "pt_b", "pt_c"])]
    for p in pts:
        p.mkdir()
    out = tmp_path / "lmms_out"
    sfts = [_sft_run(tmp_path / "runs", f"sft_{p.parent.name[-1]}", p) for p in pts]
    for i, sft in enumerate(sfts):
        write_results(out, str(sft), scores_for(i))
    assert fine_tuned_from(str(sfts[0])) == str(pts[0].resolve())
    found = find_eval_results(out)[0]
    table = _table(found)  # no checkpoints given: the pre-trained models
    assert sorted({c.model for c in table.checkpoints}) == [str(p.resolve()) for p in pts]
    assert table.checkpoints[0].scored["model"] == str(sfts[0])
    table = _table(found, [str(pts[2]), str(pts[0]), str(pts[1])])  # given: matched through it
    assert [c.model for c in table.checkpoints if c.group == "mme"] == [
        str(pts[i]) for i in (2, 0, 1)
    ]
    # a pre-training run's model is scored as itself (its record names the base model)
    base = tmp_path / "base"
    base.mkdir()
    assert fine_tuned_from(str(_sft_run(tmp_path, "pt_run", base, stage="pretrain"))) is None
    (tmp_path / "runs" / "sft_a" / "stage.json").write_text("{broken")
    with pytest.raises(DataError, match="not a readable stage record"):
        fine_tuned_from(str(sfts[0]))


def test_the_module_examples_run():
    import doctest

    import modalign.evidence.lmms_results

    result = doctest.testmod(modalign.evidence.lmms_results)
    assert result.attempted >= 1 and result.failed == 0
