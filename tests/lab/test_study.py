"""Studies: grid x seeds of cycles, resumable, a report with every measure's seed range."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from modalign.lab.cycle import CycleConfig
from modalign.lab.study import STUDIES, render_markdown, run_study, spearman, variant_config
from modalign.train.recipe import MonitorSettings


def _tiny_cycle() -> CycleConfig:
    base = CycleConfig()
    one = lambda r: replace(r, train=replace(r.train, steps=1, save_steps=0, log_steps=1,  # noqa: E731
                                                 progress=False, batch_size=4))  # fmt: skip
    pretrain = replace(one(base.pretrain), monitor=MonitorSettings(every=1, stop=False, n=4))
    return replace(base, sizes={"train": 8, "val": 2, "test": 4}, corpus_scenes=5,
                   pretrain=pretrain, sft=one(base.sft), mir_samples=4, fresh_seeds=1)  # fmt: skip


def test_variants_change_only_the_pretraining_recipe():
    study = STUDIES["toolkit"]()
    names = [v.name for v in study.variants]
    assert {"baseline", "moca", "linear", "mlp4x_gelu", "qformer", "resampler", "pool",
            "llm_lora_merged", "llm_lora_kept", "llm_former_half", "llm_all"} == set(names)  # fmt: skip
    base = variant_config(study, study.variants[0], seed=3)
    for v in study.variants[1:]:
        cfg = variant_config(study, v, seed=3)
        assert cfg.sft == base.sft and cfg.sizes == base.sizes and cfg.seed == 3
        assert cfg.pretrain != base.pretrain and cfg.pretrain.train.seed == 3
    kept = variant_config(study, study.variants[names.index("llm_lora_kept")], 0)
    assert kept.pretrain.stage.unlock.llm == "lora" and not kept.pretrain.stage.unlock.lora.merge


def test_a_tiny_study_reports_seed_ranges_and_resumes(tmp_path):
    summary = run_study("toolkit", tmp_path / "runs", [0, 1], tmp_path / "docs",
                        cycle=_tiny_cycle(), variants=["baseline", "linear"])  # fmt: skip
    saved = json.loads((tmp_path / "docs" / "toolkit.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert (tmp_path / "docs" / "toolkit.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "docs" / "toolkit.md").read_text()
    assert "| baseline | 2 |" in table and "| linear | 2 |" in table
    for v in summary["variants"].values():
        values = [r["mir"] for r in v["per_seed"].values()]
        assert v["mir"]["min"] == min(values) and v["mir"]["max"] == max(values)
        assert v["mir"]["mean"] == pytest.approx(sum(values) / 2)
    # Both seeds' cycles exist and share one dataset per seed; a re-run trains nothing again.
    runs = tmp_path / "runs" / "toolkit"
    assert sorted(p.name for p in runs.iterdir()) == [
        "baseline",
        "data-seed0",
        "data-seed1",
        "linear",
    ]
    stamp = (runs / "linear" / "seed1" / "cycle.json").stat().st_mtime_ns
    again = run_study("toolkit", tmp_path / "runs", [0, 1], tmp_path / "docs",
                      cycle=_tiny_cycle(), variants=["baseline", "linear"])  # fmt: skip
    assert again == summary
    assert (runs / "linear" / "seed1" / "cycle.json").stat().st_mtime_ns == stamp


def test_spearman_and_markdown_edge_cases():
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 1, 1]) is None  # a constant measure has no rank correlation
    summary = {"study": "s", "description": "d", "reference": "r", "variants": {},
               "spearman_mir_vqa": None, "spearman_mir_caption_loss": 0.5}  # fmt: skip
    assert "undefined" in render_markdown(summary)
