"""`modalign validate --scores-from` on lmms-eval results laid out exactly as lmms-eval writes
them (tests/evidence/lmms_fixture.py), with tiny LLaVA checkpoints built offline: mapping, task
and metric flags, missing and extra files, the small-n warning, one labelled PNG per measure,
and nothing written on an error."""

from __future__ import annotations

import json

import pytest

from modalign.cli import main
from modalign.evidence.measures import MEASURES
from modalign.testing.tiny_vlms import build_tiny
from tests.cli.probe import write_probe
from tests.evidence.lmms_fixture import sanitize_model_name, scores_for, write_results


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Four tiny checkpoints, each scored on mme, pope and textvqa_val by one lmms-eval run,
    a fifth run of a model that is not among them, a probe set and a shared measurement cache."""
    root = tmp_path_factory.mktemp("lmms")
    images, texts = write_probe(root)
    models = [build_tiny("llava", root / "runs" / f"pt_{k}" / "model", seed=k) for k in range(4)]
    out = root / "lmms_out"
    for k, m in enumerate(models):
        write_results(out, str(m), scores_for(k))
    write_results(out, str(root / "elsewhere" / "other" / "model"), scores_for(7))
    return root, images, texts, models, out


def _args(world, out, *extra):
    root, images, texts, _, _ = world
    return ["validate", "--out", str(out), "--images", str(images), "--texts", str(texts),
            "--n", "8", "--bootstrap", "50", "--dtype", "float32", "--device", "cpu",
            "--cache", str(root / "cache"), *extra]  # fmt: skip


def test_scores_from_an_lmms_eval_output_folder(world, tmp_path, capsys):
    _, _, _, models, lmms = world
    out = tmp_path / "val"
    given = [x for m in models[:3] for x in ("--model", str(m))]
    assert main(_args(world, out, "--scores-from", str(lmms), *given)) == 0
    captured = capsys.readouterr()
    report = json.loads((out / "validate.json").read_text())
    assert list(report["correlations"]) == ["mme", "pope", "textvqa_val"]  # one group per task
    assert report["scores"]["tasks"]["mme"]["metric"] == "mme_perception_score,none"
    rows = report["checkpoints"]
    assert [(r["model"], r["group"]) for r in rows] == [
        (str(m), t) for t in ("mme", "pope", "textvqa_val") for m in models[:3]
    ]
    assert [r["score"] for r in rows[3:6]] == pytest.approx([0.80, 0.81, 0.82])  # pope_accuracy
    assert rows[0]["scored"]["file"].endswith("20250314_101500_results.json")
    # the other run and the fourth checkpoint's file: one line each; 3 < 8 checkpoints: warned
    assert "elsewhere/other/model, which is no checkpoint given" in captured.err
    assert f"{models[3]}, which is no checkpoint given" in captured.err
    assert captured.err.count("which is no checkpoint given") == 2
    assert captured.err.count("too few for a bootstrap interval") == 3
    assert "3 checkpoints, fewer than 8: too few for an interval" in captured.out
    assert any("too few" in w for w in report["warnings"])
    assert report["small_n"] == {"threshold": 8, "groups": dict.fromkeys(report["correlations"], 3)}
    measured = list(rows[0]["measures"])
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"validate-{m}.png" for m in measured
    )
    assert "mir" in measured and not (out / "validate.png").exists()


def test_task_and_metric_flags_and_the_models_named_in_the_files(world, tmp_path, capsys):
    _, _, _, models, lmms = world
    out = tmp_path / "val"
    scores = tmp_path / "scores"
    for m in models[:3]:  # a folder of three of the runs, copied from lmms-eval's output
        run = lmms / sanitize_model_name(str(m))
        (scores / run.name).mkdir(parents=True)
        for f in run.iterdir():
            (scores / run.name / f.name).write_bytes(f.read_bytes())
    assert main(_args(world, out, "--scores-from", str(scores), "--task", "pope", "--metric",
                      "pope_f1_score")) == 0  # fmt: skip
    report = json.loads((out / "validate.json").read_text())
    assert list(report["correlations"]) == ["pope"]
    assert [r["model"] for r in report["checkpoints"]] == [str(m) for m in models[:3]]
    assert [r["score"] for r in report["checkpoints"]] == pytest.approx([0.85, 0.84, 0.83])
    assert report["scores"]["tasks"] == {"pope": {"metric": "pope_f1_score,none",
                                                  "chosen_by": "--metric"}}  # fmt: skip
    assert capsys.readouterr().err.count("(cached)") == 3  # measured by the test above


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "vqav2"], "task(s) vqav2 not in the results"),
        (["--metric", "bleu"], "no task of the results has metric 'bleu'"),
        (["--score", "1"], "--scores-from gives the scores"),
        (["--task", "pope", "--metric", "mme=mme_cognition_score,none"], "no --task selects"),
    ],
)
def test_bad_selections_are_one_line_and_nothing_is_written(world, tmp_path, capsys, extra,
                                                            message):  # fmt: skip
    out = tmp_path / "val"
    assert main(_args(world, out, "--scores-from", str(world[4]), *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_no_results_or_no_match_is_refused_before_anything_is_written(world, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "val"
    assert main(_args(world, out, "--scores-from", str(empty))) == 2
    assert "no lmms-eval results file" in capsys.readouterr().err
    others = [x for k in range(3) for x in ("--model", str(tmp_path / f"nope{k}"))]
    assert main(_args(world, out, "--scores-from", str(world[4]), *others)) == 2
    assert "none of the 5 lmms-eval results file(s) scored a checkpoint given" in (
        capsys.readouterr().err
    )
    assert main(_args(world, out, "--task", "pope")) == 2
    assert "give --scores-from" in capsys.readouterr().err
    assert not out.exists()


def test_every_measure_png_name_is_checked_before_work(world, tmp_path, capsys):
    out = tmp_path / "val"
    out.mkdir()
    (out / "validate-kid.png").mkdir()  # a folder where a PNG goes
    assert main(_args(world, out, "--scores-from", str(world[4]))) == 2
    assert "validate-kid.png' is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["validate-kid.png"]
    assert "kid" in MEASURES
