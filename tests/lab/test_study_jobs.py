"""`lab study --jobs N`: points trained side by side in worker processes give the study one
after another gives, in grid order, with each point's progress in its log."""

from __future__ import annotations

import json

import pytest
from modalign_lab.studies.archive import record_path
from modalign_lab.studies.jobs import PointJob, run_jobs
from modalign_lab.studies.study import run_study, variant_config

from modalign.errors import ConfigError
from tests.lab.test_study import _tiny

VARIANTS = ["baseline", "linear"]


def _rows(summary: dict) -> dict:
    """Per variant and seed, the numbers the report is made of."""
    return {v: row["per_seed"] for v, row in summary["sft"]["sft"]["variants"].items()}


def test_points_trained_in_workers_equal_points_trained_here(tmp_path):
    study = _tiny("toolkit")
    here = run_study(study, tmp_path / "a", [0], tmp_path / "da", variants=VARIANTS)
    runs, archive = tmp_path / "b", tmp_path / "points"
    apart = run_study(study, runs, [0], tmp_path / "db", variants=VARIANTS, archive=archive,
                      jobs=2, threads=1)  # fmt: skip
    expected = _rows(here)
    for variant, seeds in _rows(apart).items():
        for seed, row in seeds.items():
            for key, value in row.items():
                if key in ("pretrain_s", "pretrain_s_per_step"):  # wall times
                    continue
                want = expected[variant][seed][key]
                if isinstance(value, float):
                    assert value == pytest.approx(want, rel=1e-5, abs=1e-7), (variant, key)
                else:
                    assert value == want, (variant, key)
    # grid order, whichever point finished first
    lines = (runs / "toolkit" / "checkpoints-sft.jsonl").read_text().splitlines()
    assert [json.loads(line)["model"].split("/")[-4] for line in lines] == VARIANTS
    for variant in VARIANTS:
        log = (runs / "toolkit" / variant / "seed0.log").read_text()
        assert "[cycle]" in log  # the worker's output went to the point's log
        assert record_path(archive, "toolkit", variant, 0).is_file()


def test_a_failing_point_stops_the_run_with_its_error(tmp_path):
    study = _tiny("toolkit")
    cfg = variant_config(study, study.variants[0], 0)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the point's folder should be")
    jobs = [PointJob("baseline", 0, blocked, cfg, tmp_path / "data"),
            PointJob("linear", 0, blocked, cfg, tmp_path / "data")]  # fmt: skip
    finished = []
    with pytest.raises((FileExistsError, NotADirectoryError)):
        run_jobs(jobs, lambda *a: finished.append(a), workers=2, threads=1)
    assert finished == []
    with pytest.raises(ConfigError, match="at least 1"):
        run_jobs(jobs, lambda *a: None, workers=0)


def test_a_sibling_studys_world_is_linked_not_generated(tmp_path):
    from modalign_lab.studies.jobs import reuse_world
    from modalign_lab.towers.train import make_data, world_key

    from modalign.assets import default_model_path
    from tests.conftest import TINY_SIZES

    base = default_model_path()
    made = make_data(tmp_path / "one" / "data-seed3", seed=3, sizes=TINY_SIZES, image_size=64,
                     corpus_scenes=40, tokenizer_from=base)  # fmt: skip
    wanted = world_key(3, TINY_SIZES, 64, None)
    target = tmp_path / "two" / "data-seed3"
    assert reuse_world(tmp_path, target, wanted, base) == made
    files = sorted(p.relative_to(made) for p in made.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert all((made / f).stat().st_ino == (target / f).stat().st_ino for f in files)
    assert not target.with_name("data-seed3.copying").exists()
    # make_data accepts the linked world as its own
    assert make_data(target, seed=3, sizes=TINY_SIZES, image_size=64, corpus_scenes=40,
                     tokenizer_from=base) == target  # fmt: skip
    # nothing is linked for another world, over an existing folder, or with a trained tokenizer
    other = tmp_path / "three" / "data-seed3"
    assert reuse_world(tmp_path, other, {**wanted, "image_size": 96}, base) is None
    assert reuse_world(tmp_path, other, {**wanted, "glyph_scale": 1}, base) is None
    assert reuse_world(tmp_path, other, wanted, None) is None
    assert reuse_world(tmp_path, target, wanted, base) is None
    assert not other.exists()
