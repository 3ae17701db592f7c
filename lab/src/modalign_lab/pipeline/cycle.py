"""The whole lab cycle: data -> pre-train (connector) -> MIR -> SFT -> held-out accuracy.

By default the towers (vision encoder, LM, tokenizer) come from the embedded default model,
as a real project starts from a released CLIP and LLM; `from_scratch` trains them too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from modalign.atomic import atomic_write_json
from modalign.settings import option
from modalign.train import MonitorSettings, Recipe, Stage, TrainConfig
from modalign_lab.pipeline.stages import evaluate, pretrain, sft
from modalign_lab.probes.mir import eval_pairs, fresh_connector_mir, mir_of
from modalign_lab.probes.recall import keeps_grid, recall_accuracy
from modalign_lab.towers.llava import load_llava
from modalign_lab.towers.specs import SFT_LR, SFT_STEPS, ClipSpec, LMSpec
from modalign_lab.towers.train import make_data, train_clip, train_lm
from modalign_lab.world.dataset import load_split
from modalign_lab.world.samples import MIXED, check_level


def lab_recipe(stage: str, train: TrainConfig, **changes) -> Recipe:
    """A recipe with the lab's choices: captions end with </s> (the lab LM's document end)."""
    extra = {"plain_end": "eos"} if stage == "pretrain" else {}
    return Recipe(Stage.defaults(stage, **extra), train, **changes)


def lab_preset(stage: str, **changes) -> Recipe:
    """What `lab pretrain` / `lab sft` / `lab cycle` train when no flag says otherwise: LLaVA's
    recipe (`Recipe.defaults`) at the world's size: batch 32, 1600 pre-training steps at 1e-3,
    the test bed's SFT budget (`SFT_STEPS` at `SFT_LR`)."""
    steps, lr = (1600, 1e-3) if stage == "pretrain" else (SFT_STEPS, SFT_LR)
    llava = Recipe.defaults(stage).train
    return lab_recipe(stage, replace(llava, steps=steps, batch_size=32, lr=lr), **changes)


@dataclass(frozen=True)
class CycleConfig:
    """Sizes and recipes of one cycle. Defaults on 2 CPU cores from the default's towers:
    pre-training 1600 steps 303 s (quiet machine, benchmarks/results/lab_cpu.json), SFT 250 steps
    at 1e-4 80-190 s and evaluation 8-26 s (testbed study, machine shared); from_scratch adds the
    CLIP and LM stages."""

    seed: int = option(0, help="seed of the generated world")
    sizes: dict[str, int] = option(
        default_factory=lambda: {"train": 4000, "val": 200, "test": 300},
        help="{key} images", flag="--{key}", keys=("train", "val", "test"),
    )  # fmt: skip
    image_size: int = option(
        96, help="64-288 px; above the tower's 96 px a high-resolution world for the tiled "
        "connectors (sa_perceiver, tiled: 288 = 3 x 3 tiles)",
    )  # fmt: skip
    glyph_scale: int | None = option(
        None, help="font dot size in px (default: image size / 32; 3 at 288 px keeps glyphs "
        "legible only at full resolution)",
    )  # fmt: skip
    corpus_scenes: int = option(20000, help="unrendered scenes in the text corpus")
    caption_level: int = option(
        3, help="caption detail level 0-3 or 'mixed' (pre-training captions)", flag="--level",
        aliases={"mixed": MIXED}, metavar="LEVEL",
    )  # fmt: skip
    pretrain: Recipe = option(
        default_factory=lambda: lab_recipe(
            "pretrain",
            TrainConfig(steps=1600, batch_size=32, lr=1e-3, save_steps=100),
            monitor=MonitorSettings(every=100, stop=False),
        ),
        help="the pre-training recipe", cli=False,
    )  # fmt: skip
    sft: Recipe = option(
        default_factory=lambda: lab_recipe(
            "sft", TrainConfig(steps=SFT_STEPS, batch_size=32, lr=SFT_LR, save_steps=100)
        ),
        help="the SFT recipe", cli=False,
    )  # fmt: skip
    multi_turn: bool = option(
        True, help="SFT on one question per sample (default: one conversation per image, all "
        "its questions, as lab sft)", flag="--single-turn", negate=True,
    )  # fmt: skip
    pretrain_images: int | None = option(
        None, help="pre-train on the first N training images (default: all)", cli=False
    )
    clip: TrainConfig = option(
        default_factory=lambda: TrainConfig(steps=800, batch_size=64, lr=5e-4, warmup_ratio=0.1),
        help="CLIP training (from_scratch)", cli=False,
    )  # fmt: skip
    lm: TrainConfig = option(
        default_factory=lambda: TrainConfig(steps=1200, batch_size=32, lr=1e-3),
        help="LM training (from_scratch)", cli=False,
    )  # fmt: skip
    clip_hard_negatives: bool = option(True, help="from_scratch only: NegCLIP captions", cli=False)
    mir_samples: int = option(100, help="probe pairs of the cycle's MIR", cli=False)
    fresh_seeds: int = option(
        5, help="fresh-connector baseline: MIR over this many connector seeds", cli=False
    )
    from_scratch: bool = option(False, help="also train CLIP and LM (default: the shipped "
                                "default's towers)")  # fmt: skip
    clip_spec: ClipSpec = option(default_factory=ClipSpec, help="from_scratch only", cli=False)
    lm_spec: LMSpec = option(default_factory=LMSpec, help="from_scratch only", cli=False)

    def __post_init__(self) -> None:
        check_level(self.caption_level)


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
