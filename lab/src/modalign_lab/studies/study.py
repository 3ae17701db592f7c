"""Named studies: a grid of pre-training variants, each a full cycle (pre-train -> MIR -> SFT ->
held-out VQA), over several seeds, then `modalign validate` on the pre-trained checkpoints.

    modalign lab study toolkit --out runs/study --seeds 0 1

Each (variant, seed) point lives in OUT/NAME/VARIANT/seedK and resumes after a kill; points of
one seed share one dataset (OUT/NAME/data-seedK). A study may probe every pre-trained point
with more SFT recipes than the cycle's own (`sft_variants`: OUT/.../seedK/sft-NAME).

After every finished point the evidence is refreshed through the users' path: the checkpoints
and their post-SFT scores are written as OUT/NAME/checkpoints-SFT.jsonl with the probe pairs
(OUT/NAME/probe.jsonl, the first seed's held-out split) and `evidence.validate` measures MIR,
the baselines and the caption loss / perplexity of each checkpoint (cached) and correlates them
with post-SFT accuracy. The report goes to REPORT_DIR/NAME.{json,md} and NAME[-SFT].png (REPORT_DIR: the committed
reports' folder, `modalign_lab.studies.REPORT_DIR`, unless another is given).

A point whose cycle is exactly that of a finished point of another study under the same OUT
(e.g. every study's baseline) is copied from it instead of trained again. With an `archive`
folder every finished point is also kept there as a small JSON record (`lab.study_archive`),
and a point missing under OUT is restored from its record instead of trained: a study resumes,
and its report regenerates, on a machine where OUT is gone.

Points are trained one after another here, or side by side in worker processes (`jobs`,
`lab.study_jobs`); either way the report lists them in grid order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json, atomic_write_text
from modalign.errors import ConfigError
from modalign.train import Recipe
from modalign_lab.pipeline.cycle import CycleConfig, config_record, finished_report
from modalign_lab.studies import REPORT_DIR
from modalign_lab.studies.jobs import MAIN_SFT, PointJob, reuse_world, run_jobs


def keep(recipe: Recipe, resources: dict[str, Any] | None = None) -> Recipe:
    """The recipe unchanged."""
    return recipe


@dataclass(frozen=True)
class Variant:
    """One grid point: a name, what it changes, and why.

    `change(recipe, resources)` changes the pre-training recipe (for an SFT variant: the SFT
    recipe); `resources` is what the study's `prepare` made for the seed (e.g. SEA labels).
    `cycle(config)` changes the rest of the cycle (caption level, pre-training images); the
    dataset itself must stay the study's.
    """

    name: str
    change: Callable[[Recipe, dict[str, Any]], Recipe] = keep
    note: str = ""
    cycle: Callable[[CycleConfig], CycleConfig] | None = None


@dataclass(frozen=True)
class Study:
    """A named grid of variants and the paper result it is compared with. `prepare(root, data,
    cycle, seed) -> resources` runs once per seed before its cycles (resumable itself)."""

    name: str
    description: str
    variants: tuple[Variant, ...]
    reference: str = ""
    cycle: CycleConfig = field(default_factory=CycleConfig)
    prepare: Callable[[Path, Path, CycleConfig, int], dict[str, Any]] | None = None
    sft_variants: tuple[Variant, ...] = ()  # more SFT recipes to probe points with
    sft_only: dict[str, tuple[str, ...]] = field(default_factory=dict)  # SFT variant -> points
    probe_n: int = 100  # probe pairs for validate (the first seed's held-out split)
    paper_mir_spearman: float | None = None  # Spearman(MIR, post-SFT avg) the paper reports


_DATA_FIELDS = ("sizes", "image_size", "glyph_scale", "corpus_scenes", "from_scratch")


def variant_config(
    study: Study, variant: Variant, seed: int, resources: dict[str, Any] | None = None
) -> CycleConfig:
    """The cycle of one grid point: the study's cycle with the variant's changes, seeded."""
    base = study.cycle
    if variant.cycle is not None:
        base = variant.cycle(base)
        moved = [f for f in _DATA_FIELDS if getattr(base, f) != getattr(study.cycle, f)]
        if moved:
            raise ConfigError(f"variant {variant.name!r} changes the study's dataset ({moved})")
    recipe = replace(base.pretrain, train=replace(base.pretrain.train, seed=seed))
    pretrain = variant.change(recipe, resources or {})
    sft = replace(base.sft, train=replace(base.sft.train, seed=seed))
    return replace(base, seed=seed, pretrain=pretrain, sft=sft)


@dataclass
class Point:
    """A finished grid point: its cycle report and its held-out evaluation per SFT recipe."""

    variant: str
    seed: int
    folder: Path
    report: dict[str, Any]
    evals: dict[str, dict[str, Any]]
    image_tokens: int  # per sample, what the LLM sees (the connector's M)
    pretrain_s_per_step: float  # the pre-training stage's own train runtime / steps
    archived: dict[str, Any] | None = None  # restored from its record: no checkpoint under folder

    @property
    def model(self) -> Path:
        return self.folder / "pretrain" / "model"

    def read_json(self, rel: str | Path) -> dict[str, Any] | None:
        """A JSON file under the point's folder (from the record for an archived point)."""
        if self.archived is not None:
            return self.archived["files"].get(str(rel))
        path = self.folder / rel
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    @classmethod
    def read(cls, variant: str, seed: int, folder: Path, report: dict, evals: dict) -> Point:
        """A point of a finished cycle; its model config and stage summary are read once here."""
        stage = json.loads((folder / "pretrain" / "stage.json").read_text(encoding="utf-8"))
        tokens = _image_tokens(folder / "pretrain" / "model")
        return cls(variant, seed, folder, report, evals, tokens,
                   stage["runtime_s"] / max(1, stage["steps"]))  # fmt: skip

    @classmethod
    def restore(cls, variant: str, seed: int, folder: Path, record: dict[str, Any]) -> Point:
        """A point from its archive record (`lab.study_archive`)."""
        return cls(variant, seed, folder, record["report"], record["evals"],
                   record["image_tokens"], record["pretrain_s_per_step"], record)  # fmt: skip


def _cycle_row(point: Point, sft: str) -> dict[str, float]:
    """What the cycle measured at the point, for one SFT recipe's evaluation."""
    report, scores = point.report, point.evals[sft]
    vqa = scores["vqa"]
    row = {
        "mir_fresh": report["mir_fresh_connector"]["mir_mean"],
        "vqa_all": vqa["all"]["accuracy"],
        **{f"vqa_{k}": v["accuracy"] for k, v in vqa.items() if k != "all"},
        "pretrain_s": report["wall_s"]["pretrain"],
        "image_tokens": point.image_tokens,
        "pretrain_s_per_step": point.pretrain_s_per_step,
    }
    per_layer = report["mir_pretrained"].get("per_layer") or []
    row.update({f"fd_layer{k}": fd for k, fd in enumerate(per_layer, start=1)})
    if "recall_pretrained" in report:
        recall = report["recall_pretrained"]
        row["recall"] = recall["accuracy"]
        row.update({f"recall_{kind}": v for kind, v in recall["by_kind"].items()})
    if "text_loss" in scores:
        row["text_loss"] = scores["text_loss"]
    return row


def _image_tokens(model_dir: Path) -> int:
    """Image tokens per sample the LLM sees: the connector's M, or the tower's patch count."""
    from transformers import AutoConfig

    from modalign.models import (
        MODEL_TYPE,
        register_auto_classes,
        vision_token_count,
    )

    register_auto_classes()
    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type == MODEL_TYPE:
        return int(config.image_seq_length)
    return vision_token_count(config)


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def probe_pairs(data: Path, n: int) -> list:
    """The validation probe: the first `n` held-out images with their detailed captions."""
    from modalign_lab.probes.mir import eval_pairs

    return eval_pairs(data, "test", n, level=3)


def _write_probe(path: Path, pairs: Sequence[Any], data: Path) -> None:
    """The probe as a pairs file for `modalign validate --pairs` (absolute image paths)."""
    rows = [{"image": str((data / "test" / "images" / f"{p.image_id}.png").resolve()),
             "text": p.text} for p in pairs]  # fmt: skip
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _validate_points(
    study: Study, points: list[Point], sft: str, root: Path, pairs: Sequence[Any]
) -> dict[str, Any]:
    """`evidence.validate` on every finished point's pre-trained model, scored by its held-out
    VQA accuracy after the SFT recipe `sft` (group: the seed); measurements cached in
    OUT/NAME/validate-cache, an archived point's taken from its record. Also writes the JSONL of
    the checkpoints present, which a user can re-run."""
    from modalign.evidence import Checkpoint, ValidateSettings, measure_checkpoint, validate
    from modalign_lab.studies.archive import archived_measure

    checkpoints = [
        Checkpoint(str(p.model), p.evals[sft]["vqa"]["all"]["accuracy"], f"seed{p.seed}")
        for p in points
        if sft in p.evals
    ]
    present = [c for c in checkpoints if Path(c.model).is_dir()]
    lines = "".join(json.dumps(c.to_dict()) + "\n" for c in present)
    atomic_write_text(root / f"checkpoints-{sft}.jsonl", lines)
    kept = {str(p.model): p.archived["validate"] or {} for p in points if p.archived is not None}
    settings = ValidateSettings(progress=False)
    return validate(checkpoints, pairs, settings, root / "validate-cache",
                    log=lambda line: print(line, flush=True),
                    measure=archived_measure(kept, pairs, settings, measure_checkpoint))  # fmt: skip


def summarize(study: Study, points: list[Point], validated: dict[str, dict]) -> dict[str, Any]:
    """Per SFT recipe: every variant's measures (mean/min/max over seeds), the spread of post-SFT
    accuracy across variants against the seed-to-seed spread, and validate's correlations."""
    from modalign.evidence import correlations
    from modalign_lab.studies.curves import study_traces

    out: dict[str, Any] = {}
    for sft, report in validated.items():
        measured = {r["model"]: r.get("measures", {}) for r in report.get("checkpoints", [])}
        variants: dict[str, Any] = {}
        for v in study.variants:
            mine = [p for p in points if p.variant == v.name and sft in p.evals]
            if not mine:
                continue
            per_seed = {p.seed: {**measured.get(str(p.model), {}), **_cycle_row(p, sft)}
                        for p in mine}  # fmt: skip
            keys = list(dict.fromkeys(k for r in per_seed.values() for k in r))
            variants[v.name] = {
                "note": v.note,
                "seeds": sorted(per_seed),
                "per_seed": {str(s): r for s, r in sorted(per_seed.items())},
                **{k: _spread([r[k] for r in per_seed.values() if k in r]) for k in keys},
            }
        means = [v["vqa_all"]["mean"] for v in variants.values()]
        seed_ranges = [v["vqa_all"]["max"] - v["vqa_all"]["min"] for v in variants.values()
                       if v["vqa_all"]["n"] > 1]  # fmt: skip
        over_means = {
            m: correlations([v[m]["mean"] for v in variants.values() if m in v],
                            [v["vqa_all"]["mean"] for v in variants.values() if m in v])["spearman"]
            for m in ("mir", "caption_loss", "perplexity", "mmd", "kid") if
            all(m in v for v in variants.values())
        }  # fmt: skip
        out[sft] = {
            "variants": variants,
            "spread": {
                "vqa_all_across_variants": max(means) - min(means) if means else None,
                "vqa_all_seed_range_max": max(seed_ranges) if seed_ranges else None,
                "vqa_all_seed_range_mean": sum(seed_ranges) / len(seed_ranges)
                if seed_ranges
                else None,
            },
            "spearman_over_variant_means": over_means,
            "validate": {k: report.get(k) for k in ("correlations", "warnings", "settings")},
        }
    return {
        "study": study.name,
        "description": study.description,
        "reference": study.reference,
        "paper_mir_spearman": study.paper_mir_spearman,
        "sft_recipes": {
            MAIN_SFT: "the cycle's SFT",
            **{v.name: v.note for v in study.sft_variants},
        },
        "sft": out,
        "traces": study_traces(points),
    }


def run_study(
    study: Study,
    out: Path,
    seeds: Sequence[int],
    report_dir: Path = REPORT_DIR,
    *,
    cycle: CycleConfig | None = None,
    variants: Sequence[str] | None = None,
    reuse: bool = True,
    archive: Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) every (variant, seed) point of `study`; after each, validate the
    finished checkpoints and rewrite the report. `reuse`: copy a point another study under
    `out` finished with the same cycle instead of training it. `archive`: keep every finished
    point's record there, and restore a point missing under `out` from its record. `jobs`:
    points trained side by side in that many worker processes of `threads` torch threads."""
    from modalign_lab.studies.archive import read_resources, write_resources
    from modalign_lab.towers.train import make_data, world_key

    if cycle is not None:
        study = replace(study, cycle=cycle)
    chosen = [v for v in study.variants if variants is None or v.name in variants]
    if not chosen:
        raise ConfigError(f"no variant of study {study.name!r} selected; it has "
                          f"{', '.join(v.name for v in study.variants)}")  # fmt: skip
    study = replace(study, variants=tuple(chosen))
    root = Path(out) / study.name
    points: list[Point] = []
    todo: list[PointJob] = []
    pairs = None
    for seed in seeds:
        data = root / f"data-seed{seed}"
        c = study.cycle
        if reuse:
            key = world_key(seed, c.sizes, c.image_size, c.glyph_scale)
            reuse_world(Path(out), data, key, _towers_base(c))
        make_data(data, seed=seed, sizes=c.sizes, image_size=c.image_size,
                  corpus_scenes=c.corpus_scenes, tokenizer_from=_towers_base(c),
                  glyph_scale=c.glyph_scale)  # fmt: skip
        if pairs is None:
            pairs = probe_pairs(data, study.probe_n)
            _write_probe(root / "probe.jsonl", pairs, data)
        saved = read_resources(archive, study.name, seed) if archive is not None else None
        resources: dict[str, Any] = saved or {}
        ready = study.prepare is None or saved is not None  # configs can be built
        records = _records(study, chosen, seed, resources, root, archive) if ready else {}
        if study.prepare is not None and (saved is None or not all(records.values())):
            print(f"[study {study.name}] preparing seed {seed}", flush=True)
            resources = study.prepare(root, data, replace(c, seed=seed), seed)
            if archive is not None:
                write_resources(archive, study.name, seed, resources)
            records = _records(study, chosen, seed, resources, root, archive)
        for variant in chosen:
            cfg = variant_config(study, variant, seed, resources)
            folder = root / variant.name / f"seed{seed}"
            record = records[variant.name]
            if record is not None:
                print(f"[study] {folder}: restored from its archived record", flush=True)
                points.append(Point.restore(variant.name, seed, folder, record))
            else:
                extra = tuple((sv.name, sv.change(cfg.sft, resources))
                              for sv in _extra_sfts(study, variant))  # fmt: skip
                todo.append(PointJob(variant.name, seed, folder, cfg, data, extra,
                                     Path(out) if reuse else None))  # fmt: skip
    order = {(s, v.name): i for i, (s, v) in enumerate((s, v) for s in seeds for v in chosen)}
    summary: dict[str, Any] = {}

    def refresh() -> dict[str, dict]:
        """Validate the points so far (in grid order, whatever order they finished in) and
        rewrite the report."""
        nonlocal summary
        points.sort(key=lambda p: order[(p.seed, p.variant)])
        sfts = dict.fromkeys(s for p in points for s in p.evals)
        validated = {s: _validate_points(study, points, s, root, pairs) for s in sfts}
        summary = summarize(study, points, validated)
        write_report(summary, validated, Path(report_dir))
        return validated

    def finished(job: PointJob, report: dict[str, Any], evals: dict[str, dict]) -> None:
        point = Point.read(job.variant, job.seed, job.folder, report, evals)
        points.append(point)
        validated = refresh()
        if archive is not None:
            _archive_point(study, point, validated[MAIN_SFT], root, Path(archive))

    if points:
        refresh()
    run_jobs(todo, finished, workers=jobs, threads=threads)
    return summary


def _extra_sfts(study: Study, variant: Variant) -> list[Variant]:
    """The study's extra SFT recipes that probe this variant's points."""
    return [sv for sv in study.sft_variants
            if variant.name in study.sft_only.get(sv.name, (variant.name,))]  # fmt: skip


def _records(
    study: Study,
    chosen: Sequence[Variant],
    seed: int,
    resources: dict[str, Any],
    root: Path,
    archive: Path | None,
) -> dict[str, dict[str, Any] | None]:
    """Per variant, the archived record that stands in for the seed's point (None: the point is
    finished under `root`, or has no usable record, and is run)."""
    from modalign_lab.studies.archive import read_record, record_path

    out: dict[str, dict[str, Any] | None] = {}
    for v in chosen:
        cfg = variant_config(study, v, seed, resources)
        if archive is None or finished_report(root / v.name / f"seed{seed}", cfg) is not None:
            out[v.name] = None
            continue
        sfts = [MAIN_SFT, *(sv.name for sv in _extra_sfts(study, v))]
        out[v.name] = read_record(record_path(archive, study.name, v.name, seed),
                                  config_record(cfg), sfts)  # fmt: skip
    return out


def _archive_point(
    study: Study, point: Point, validated: dict[str, Any], root: Path, archive: Path
) -> None:
    """Write the record of a point finished here, with its validate measurement (from
    OUT/NAME/validate-cache) where it has one."""
    from modalign.evidence import MeasureCache
    from modalign_lab.studies.archive import record_path, write_record

    key = next((r["key"] for r in validated.get("checkpoints", [])
                if r["model"] == str(point.model) and "key" in r), None)  # fmt: skip
    kept = MeasureCache(root / "validate-cache").get(key) if key is not None else None
    measured = None if kept is None else {"data": validated["data"]["fingerprint"],
                                          "settings": validated["settings"], "record": kept}  # fmt: skip
    write_record(record_path(archive, study.name, point.variant, point.seed), report=point.report,
                 evals=point.evals, image_tokens=point.image_tokens,
                 pretrain_s_per_step=point.pretrain_s_per_step, folder=point.folder,
                 measured=measured)  # fmt: skip


def _towers_base(cycle: CycleConfig) -> Path | None:
    """Where the tokenizer comes from: the embedded default (towers reused), or none."""
    if cycle.from_scratch:
        return None
    from modalign.assets import default_model_path

    return default_model_path()


def write_report(
    summary: dict[str, Any], validated: dict[str, dict], report_dir: Path = REPORT_DIR
) -> None:
    """REPORT_DIR/NAME.json and .md, and per SFT recipe the validate scatter PNG (NAME.png for
    the cycle's SFT, NAME-SFT.png for the others), each written atomically."""
    from modalign.evidence import plot_scatter
    from modalign_lab.studies.curves import plot_traces
    from modalign_lab.studies.report import render_markdown

    stem = Path(report_dir) / summary["study"]
    plot_traces(summary.get("traces") or {}, stem)
    atomic_write_json(stem.with_suffix(".json"), summary)
    atomic_write_text(stem.with_suffix(".md"), render_markdown(summary))
    for sft, report in validated.items():
        if any("measures" in r for r in report.get("checkpoints", [])):
            png = (
                stem.with_suffix(".png")
                if sft == MAIN_SFT
                else stem.parent / f"{stem.name}-{sft}.png"
            )
            plot_scatter(report, png, ylabel=f"held-out VQA after SFT ({sft})")
