"""The whole lab cycle: data -> pre-train (connector) -> MIR -> SFT -> held-out accuracy.

By default the towers (vision encoder, LM, tokenizer) come from the embedded default model,
as a real project starts from a released CLIP and LLM; `from_scratch` trains them too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from modalign.atomic import atomic_write_json
from modalign.train import MonitorSettings, Recipe, Stage, TrainConfig
from modalign_lab.pipeline.stages import evaluate, pretrain, sft
from modalign_lab.probes.mir import eval_pairs, fresh_connector_mir, mir_of
from modalign_lab.probes.recall import keeps_grid, recall_accuracy
from modalign_lab.towers.llava import load_llava
from modalign_lab.towers.specs import SFT_LR, SFT_STEPS, ClipSpec, LMSpec
from modalign_lab.towers.train import make_data, train_clip, train_lm
from modalign_lab.world.dataset import load_split


def lab_recipe(stage: str, train: TrainConfig, **changes) -> Recipe:
    """A recipe with the lab's choices: captions end with </s> (the lab LM's document end)."""
    extra = {"plain_end": "eos"} if stage == "pretrain" else {}
    return Recipe(Stage.defaults(stage, **extra), train, **changes)


@dataclass(frozen=True)
class CycleConfig:
    """Sizes and recipes of one cycle. Defaults on 2 CPU cores from the default's towers:
    pre-training 1600 steps 303 s (quiet machine, benchmarks/results/lab_cpu.json), SFT 250 steps
    at 1e-4 80-190 s and evaluation 8-26 s (testbed study, machine shared); from_scratch adds the
    CLIP and LM stages."""

    seed: int = 0
    sizes: dict[str, int] = field(default_factory=lambda: {"train": 4000, "val": 200, "test": 300})
    image_size: int = 96
    glyph_scale: int | None = None  # font dot size in px (None: the image size's default)
    corpus_scenes: int = 20000
    caption_level: int = 3
    pretrain: Recipe = field(
        default_factory=lambda: lab_recipe(
            "pretrain",
            TrainConfig(steps=1600, batch_size=32, lr=1e-3, save_steps=100),
            monitor=MonitorSettings(every=100, stop=False),
        )
    )
    sft: Recipe = field(
        default_factory=lambda: lab_recipe(
            "sft", TrainConfig(steps=SFT_STEPS, batch_size=32, lr=SFT_LR, save_steps=100)
        )
    )
    multi_turn: bool = True  # SFT on one conversation per image (all its questions), as lab sft
    pretrain_images: int | None = None  # pre-train on the first N training images (None: all)
    clip: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=5e-4, warmup_ratio=0.1)
    )
    lm: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=32, lr=1e-3))
    clip_hard_negatives: bool = True  # from_scratch only: NegCLIP captions (see train_clip)
    mir_samples: int = 100
    fresh_seeds: int = 5  # fresh-connector baseline: MIR over this many connector seeds
    from_scratch: bool = False
    clip_spec: ClipSpec = field(default_factory=ClipSpec)  # from_scratch only
    lm_spec: LMSpec = field(default_factory=LMSpec)  # from_scratch only


def run_cycle(
    out: Path, config: CycleConfig | None = None, base: Path | None = None, data: Path | None = None
) -> dict:
    """Run every stage under `out`; writes and returns out/cycle.json (metrics + wall times).

    `data`: a dataset folder to use (made there if missing; studies share one per seed);
    default out/data. A killed cycle resumes when re-run; a finished one is returned as is.
    """
    cfg = config or CycleConfig()
    out = Path(out)
    done = finished_report(out, cfg)
    if done is not None:
        return done
    times: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t = time.perf_counter()
        value = fn(*args, **kwargs)
        times[name] = round(time.perf_counter() - t, 2)
        print(f"[cycle] {name}: {times[name]:.1f} s", flush=True)
        return value

    if not cfg.from_scratch and base is None:
        from modalign.assets import default_model_path

        base = default_model_path()
    data = timed(
        "data",
        make_data,
        Path(data) if data is not None else out / "data",
        seed=cfg.seed,
        sizes=cfg.sizes,
        image_size=cfg.image_size,
        corpus_scenes=cfg.corpus_scenes,
        tokenizer_from=None if cfg.from_scratch else base,
        glyph_scale=cfg.glyph_scale,
    )
    report: dict = {"config": config_record(cfg), "base": str(base)}
    if cfg.from_scratch:
        report["clip"] = timed(
            "train_clip",
            train_clip,
            data,
            out / "clip",
            replace(cfg.clip_spec, image_size=cfg.image_size),
            cfg.clip,
            hard_negatives=cfg.clip_hard_negatives,
        )
        report["lm"] = timed("train_lm", train_lm, data, out / "lm", cfg.lm_spec, cfg.lm)
        towers = {"clip": out / "clip", "lm": out / "lm"}
    else:
        towers = {"base": base}
    report["pretrain"] = timed(
        "pretrain",
        pretrain,
        data,
        out / "pretrain",
        cfg.pretrain,
        level=cfg.caption_level,
        images=cfg.pretrain_images,
        **towers,
    )
    pairs = eval_pairs(data, "test", cfg.mir_samples, level=3)
    model, processor = load_llava(out / "pretrain" / "model")
    report["mir_pretrained"] = timed("mir", mir_of, model, processor, pairs)
    if keeps_grid(model):  # recalled words need one token per patch
        report["recall_pretrained"] = recall_accuracy(
            model, processor, load_split(data, "test", cfg.mir_samples)
        )
    # The same model before stage 1, over several connector seeds (one draw is noisy).
    report["mir_fresh_connector"] = fresh_connector_mir(
        model, processor, pairs, range(cfg.fresh_seeds)
    )
    point = finetune(out, cfg, data, "sft", cfg.sft)
    report["sft"], report["eval"] = point["sft"], point["eval"]
    times.update(point["wall_s"])
    report["wall_s"] = times
    report["wall_s"]["total"] = round(sum(times.values()), 2)
    report["threads"] = torch.get_num_threads()
    atomic_write_json(out / "cycle.json", report)
    return report


def finished_report(out: Path, cfg: CycleConfig) -> dict | None:
    """The report of a finished cycle of exactly `cfg` under `out`, or None."""
    done = Path(out) / "cycle.json"
    if not done.is_file():
        return None
    report = json.loads(done.read_text(encoding="utf-8"))
    return report if report.get("config") == config_record(cfg) else None


def finetune(out: Path, cfg: CycleConfig, data: Path, name: str, recipe: Recipe) -> dict:
    """SFT of the cycle's pre-trained model (out/pretrain) with `recipe` into out/NAME, then the
    held-out evaluation; the result (out/NAME/point.json) is reused when the recipe is the same.
    A study can probe one pre-trained model with several SFT recipes this way."""
    out = Path(out)
    done = out / name / "point.json"
    record = {"recipe": recipe.to_dict(), "multi_turn": cfg.multi_turn, "level": cfg.caption_level}
    record = json.loads(json.dumps(record, default=str))
    if done.is_file():
        point = json.loads(done.read_text(encoding="utf-8"))
        if point.get("settings") == record:
            return point
    _set_aside_if_stale(out / name, recipe)
    t = time.perf_counter()
    trained = sft(data, out / "pretrain", out / name, recipe, multi_turn=cfg.multi_turn)
    t_sft = time.perf_counter() - t
    scores = evaluate(out / name, data, "test", level=cfg.caption_level)
    point = {"settings": record, "sft": trained, "eval": scores,
             "wall_s": {"sft": round(t_sft, 2), "eval": round(time.perf_counter() - t - t_sft, 2)}}  # fmt: skip
    atomic_write_json(done, point)
    return point


def _set_aside_if_stale(folder: Path, recipe: Recipe) -> None:
    """An SFT folder trained with another recipe (e.g. after the cycle's SFT default changed)
    is renamed to FOLDER.oldK, kept, and the new recipe trains in a fresh FOLDER."""
    summary = folder / "stage.json"
    points = folder / "point.json"
    if not folder.is_dir() or not (summary.is_file() or points.is_file()):
        return
    if summary.is_file():
        settings = json.loads(summary.read_text(encoding="utf-8")).get("settings", {})
        same = settings.get("train") == json.loads(
            json.dumps(recipe.train.to_dict())
        ) and settings.get("stage") == json.loads(json.dumps(recipe.stage.to_dict()))
        if same and not points.is_file():
            return  # trained with this recipe; only its evaluation is missing
    k = 1
    while folder.with_name(f"{folder.name}.old{k}").exists():
        k += 1
    folder.rename(folder.with_name(f"{folder.name}.old{k}"))
    print(
        f"[cycle] {folder} was trained with another recipe: kept as {folder.name}.old{k}",
        flush=True,
    )


UNRECORDED_WHEN_NONE = ("glyph_scale",)


def config_record(cfg: CycleConfig) -> dict:
    """JSON-ready record of the cycle's settings (recipes in full). Two cycles with equal
    records train on the same data the same way (the seed and the world are in it)."""
    record = json.loads(json.dumps(asdict(cfg), default=str))
    record["pretrain"], record["sft"] = cfg.pretrain.to_dict(), cfg.sft.to_dict()
    for key in UNRECORDED_WHEN_NONE:  # fields added later: finished cycles stay finished
        if record.get(key) is None:
            record.pop(key, None)
    return json.loads(json.dumps(record, default=str))
