"""Studies: grid x seeds of cycles, resumable, validated through `evidence.validate`, with a
report of every measure's seed range and the correlations with post-SFT accuracy."""

from __future__ import annotations

import json
from dataclasses import replace

import modalign_lab.studies.jobs as jobs_mod
import pytest
from modalign_lab.pipeline.cycle import CycleConfig
from modalign_lab.studies.catalog import STUDIES, recipe_change
from modalign_lab.studies.report import render_markdown
from modalign_lab.studies.study import Variant, run_study, variant_config

from modalign.errors import ConfigError
from modalign.train.recipe import MonitorSettings


def _tiny_cycle() -> CycleConfig:
    base = CycleConfig()
    one = lambda r: replace(r, train=replace(r.train, steps=1, save_steps=0, log_steps=1,  # noqa: E731
                                                 progress=False, batch_size=4))  # fmt: skip
    pretrain = replace(one(base.pretrain), monitor=MonitorSettings(every=1, stop=False, n=4))
    return replace(base, sizes={"train": 8, "val": 2, "test": 6}, corpus_scenes=5,
                   pretrain=pretrain, sft=one(base.sft), mir_samples=6, fresh_seeds=1)  # fmt: skip


def _tiny(name: str, **changes):
    return replace(STUDIES[name](), cycle=_tiny_cycle(), probe_n=6, **changes)


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


def test_every_study_builds_its_grid():
    for name in STUDIES.names():
        study = STUDIES[name]()
        assert len({v.name for v in study.variants}) == len(study.variants) >= 3, name
        for v in study.variants:
            resources = {"labels": "cache", "oracle_labels": "oracle", "region_labels": "regions", "diffusion": "parts/diffusion",
                         "vq": "parts/vq"}  # fmt: skip
            cfg = variant_config(study, v, seed=1, resources=resources)
            assert cfg.seed == 1 and cfg.sizes == study.cycle.sizes
            if cfg.pretrain_images is not None:  # one epoch over a prefix
                assert cfg.pretrain_images <= cfg.sizes["train"]
    scale = {v.name: variant_config(STUDIES["scale"](), v, 0) for v in STUDIES["scale"]().variants}
    assert scale["n800"].pretrain.train.steps == 25 and scale["n51200"].pretrain.train.steps == 1600
    unlocked = variant_config(
        STUDIES["scale_unlocked"](), STUDIES["scale_unlocked"]().variants[0], 0
    )
    assert unlocked.pretrain.stage.unlock.llm == "full"
    assert {v.name: variant_config(STUDIES["detail"](), v, 0).caption_level
            for v in STUDIES["detail"]().variants} == {f"level{k}": k for k in range(4)}  # fmt: skip
    recipe = [
        variant_config(STUDIES["recipe"](), v, 0).pretrain.train
        for v in STUDIES["recipe"]().variants
    ]
    assert {(t.lr, t.warmup_ratio, t.schedule) for t in recipe} >= {(3e-3, 0.03, "cosine"),
                                                                    (1e-3, 0.03, "linear")}  # fmt: skip


def test_a_variant_may_not_change_the_dataset():
    study = replace(
        STUDIES["toolkit"](), variants=(Variant("big", cycle=lambda c: replace(c, image_size=64)),)
    )
    with pytest.raises(ConfigError, match="changes the study's dataset"):
        variant_config(study, study.variants[0], 0)


def test_a_tiny_study_validates_reports_and_resumes(tmp_path):
    study = _tiny(
        "toolkit",
        sft_variants=(Variant("lowlr", recipe_change(lr=1e-5), "SFT lr 1e-5"),),
        sft_only={"lowlr": ("linear",)},
    )
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    summary = run_study(study, runs, [0, 1], docs, variants=["baseline", "linear"])
    saved = json.loads((docs / "toolkit.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert set(summary["sft"]) == {"sft", "lowlr"}
    assert set(summary["sft"]["lowlr"]["variants"]) == {"linear"}  # sft_only
    assert not (runs / "toolkit" / "baseline" / "seed0" / "sft-lowlr").exists()
    for png in (
        "toolkit.png",
        "toolkit-lowlr.png",
        "toolkit-mir-curves.png",
        "toolkit-recall-curves.png",
    ):
        assert (docs / png).read_bytes()[:4] == b"\x89PNG"
    table = (docs / "toolkit.md").read_text()
    assert "| baseline | 2 |" in table and "## SFT `lowlr`: SFT lr 1e-5" in table
    assert "## MIR (lower is better aligned) during pre-training" in table
    assert "## recalled-word accuracy (layer 0) during pre-training" in table
    assert "| variant | FD layer 1 | FD layer 2 |" in table
    assert summary["traces"]["recall"]["baseline"]["steps"] == [0, 1]
    curve = summary["traces"]["mir"]["baseline"]
    assert curve["steps"] == [0, 1] and set(curve["per_seed"]) == {"0", "1"}
    last = [c["values"][-1] for c in curve["per_seed"].values()]
    assert curve["min"][-1] == min(last) and curve["max"][-1] == max(last)
    part = summary["sft"]["sft"]
    for v in part["variants"].values():
        values = [r["mir"] for r in v["per_seed"].values()]
        assert v["mir"]["min"] == min(values) and v["mir"]["max"] == max(values)
        assert v["mir"]["mean"] == pytest.approx(sum(values) / 2)
        assert {"caption_loss", "perplexity", "mmd", "vqa_all", "mir_fresh", "fd_layer1",
                "recall"} <= set(v)  # fmt: skip
    # validate's correlations per seed and pooled, over the 4 checkpoints
    corr = part["validate"]["correlations"]
    assert set(corr) == {"seed0", "seed1", "all groups (pooled)"}
    assert corr["all groups (pooled)"]["mir"]["n"] == 4
    root = runs / "toolkit"
    lines = (root / "checkpoints-sft.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["group"] == "seed0"
    assert len((root / "probe.jsonl").read_text().splitlines()) == 6
    # seed 0's probe MIR is the cycle's own MIR (same pairs, same path)
    cycle = json.loads((root / "baseline" / "seed0" / "cycle.json").read_text())
    assert part["variants"]["baseline"]["per_seed"]["0"]["mir"] == pytest.approx(
        cycle["mir_pretrained"]["mir"]
    )
    # a re-run trains and measures nothing again
    stamp = (root / "linear" / "seed1" / "cycle.json").stat().st_mtime_ns
    cached = sorted(p.name for p in (root / "validate-cache").iterdir())
    again = run_study(study, runs, [0, 1], docs, variants=["baseline", "linear"])
    assert again == summary
    assert (root / "linear" / "seed1" / "cycle.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (root / "validate-cache").iterdir()) == cached


def test_a_killed_study_resumes_without_redoing_finished_points(tmp_path, monkeypatch):
    study = _tiny("toolkit")
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    real = jobs_mod.run_cycle
    calls = []

    def killed_on_second(folder, cfg, data=None):
        calls.append(folder.parent.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(folder, cfg, data=data)

    monkeypatch.setattr(jobs_mod, "run_cycle", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, runs, [0], docs, variants=["baseline", "linear"])
    stamp = (runs / "toolkit" / "baseline" / "seed0" / "cycle.json").stat().st_mtime_ns
    monkeypatch.setattr(jobs_mod, "run_cycle", real)
    summary = run_study(study, runs, [0], docs, variants=["baseline", "linear"])
    assert (runs / "toolkit" / "baseline" / "seed0" / "cycle.json").stat().st_mtime_ns == stamp
    assert set(summary["sft"]["sft"]["variants"]) == {"baseline", "linear"}
    # another study with the same baseline cycle copies the finished point instead of training
    copy = replace(study, name="copy", variants=(study.variants[0],))

    def finished_only(folder, cfg, data=None):
        assert (folder / "cycle.json").is_file(), "a point identical to a finished one trained"
        return real(folder, cfg, data=data)

    monkeypatch.setattr(jobs_mod, "run_cycle", finished_only)
    again = run_study(copy, runs, [0], docs)
    row = again["sft"]["sft"]["variants"]["baseline"]["per_seed"]["0"]
    assert (
        row["vqa_all"] == summary["sft"]["sft"]["variants"]["baseline"]["per_seed"]["0"]["vqa_all"]
    )
    assert not (runs / "copy" / "baseline" / "seed0.copying").exists()

    # unless told not to
    def must_train(folder, cfg, data=None):
        assert not (folder / "cycle.json").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_mod, "run_cycle", must_train)
    with pytest.raises(KeyboardInterrupt):
        run_study(replace(copy, name="fresh"), runs, [0], docs, reuse=False)
    # a different cycle (another seed) finds nothing to copy
    other = variant_config(study, study.variants[0], 1)
    assert jobs_mod.reuse_identical(runs, runs / "copy" / "baseline" / "seed1", other) is None


def test_markdown_edge_cases():
    summary = {"study": "s", "description": "d", "reference": "r", "sft_recipes": {"sft": ""},
               "sft": {"sft": {"variants": {}, "spread": dict.fromkeys(
                   ("vqa_all_across_variants", "vqa_all_seed_range_max", "vqa_all_seed_range_mean")),
                   "spearman_over_variant_means": {"mir": None}, "validate": {}}}}  # fmt: skip
    text = render_markdown(summary)
    assert "undefined" in text and "## SFT `sft`" in text


def test_vlsa_study_grid():
    study = STUDIES["vlsa"]()
    assert (study.cycle.image_size, study.cycle.glyph_scale) == (288, 1)
    assert (study.cycle.sft.train.lr, study.cycle.sft.train.steps) == (1e-3, 500)
    resources = {"diffusion": "/parts/diffusion", "vq": "/parts/vq"}
    cfgs = {v.name: variant_config(study, v, 0, resources) for v in study.variants}
    assert cfgs["lowres"].pretrain.connector is None
    assert cfgs["tiled"].pretrain.connector.startswith("tiled:grid_rows=3,grid_cols=3")
    rec = cfgs["sa_perceiver_rec"].pretrain
    assert rec.connector == cfgs["sa_perceiver"].pretrain.connector
    (objective,) = rec.stage.objectives
    assert objective.name == "reconstruction"
    assert dict(objective.options)["diffusion"] == "/parts/diffusion"
    assert all(c.sft.stage.cognition is None for c in cfgs.values())
    cognition, long = study.sft_variants
    assert study.sft_only["cognition"] == ("tiled", "sa_perceiver_rec")  # Table 3 rows 5, 6
    spec = cognition.change(cfgs["tiled"].sft, resources).stage.cognition
    assert spec.kinds == ("pixel", "vq") and spec.vq_model == "/parts/vq"
    # the long SFT: same recipe, 4x the steps, on the three connectors
    assert study.sft_only["long"] == ("lowres", "tiled", "sa_perceiver")
    longer = long.change(cfgs["tiled"].sft, resources)
    assert (longer.train.lr, longer.train.steps) == (1e-3, 2000)
    assert longer.stage == cfgs["tiled"].sft.stage


def test_vlsa_prepare_reconstructs_the_full_resolution_image(tmp_path, monkeypatch):
    """The seed's VAE encodes the 288 px image (not the 96 px view), in a folder named by its
    size; the VQ model keeps its default spec and folder."""
    from modalign_lab.towers import diffusion

    calls = {}
    monkeypatch.setattr(diffusion, "make_diffusion",
                        lambda data, out, spec=None: calls.setdefault("vae", (out, spec)))  # fmt: skip
    monkeypatch.setattr(diffusion, "make_vq",
                        lambda data, out, spec=None: calls.setdefault("vq", (out, spec)))  # fmt: skip
    study = STUDIES["vlsa"]()
    resources = study.prepare(tmp_path, tmp_path / "data", study.cycle, 1)
    out, spec = calls["vae"]
    assert (spec.vae_size, spec.patch) == (288, 6)
    assert resources["diffusion"] == str(out) == str(tmp_path / "vlsa-seed1" / "diffusion-288px")
    assert calls["vq"] == (tmp_path / "vlsa-seed1" / "vq", None)
    assert resources["vq"] == str(tmp_path / "vlsa-seed1" / "vq")
