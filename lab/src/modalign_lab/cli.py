"""`modalign lab ...`: generate the miniature world, train each stage, evaluate, run the cycle.

`lab pretrain`, `lab sft` and `lab cycle` take the training flags of `modalign train`
(`--connector`, `--moca`, `--llm`, `--vision`, `--objective`, `--mir-every` ...), generated from
the same settings dataclasses, and run the same training path on the world's data; their
defaults are the lab's presets (`modalign_lab.pipeline.cycle.lab_preset`). World sizes come from
`CycleConfig`'s fields, tower training from `TrainConfig`'s: every flag is declared once.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalign.atomic import atomic_write_json, check_writable
from modalign.cli import (
    RECIPE,
    add_config_option,
    add_recipe_options,
    read_config,
    recipe_from_options,
)
from modalign.errors import ConfigError
from modalign.settings import add_options, apply_changes, given_options, option
from modalign_lab.studies import REPORT_DIR

CYCLE, TOWER, SFT, LAB = "cycle", "tower", "sft", "lab"  # namespaces of generated flags
TOWER_FLAGS = ("steps", "batch_size", "lr", "seed", "save_steps", "progress")


@dataclass(frozen=True)
class LabRun:
    """How a lab command runs on this machine (not part of any result)."""

    threads: int | None = option(None, help="torch CPU threads (default: torch's choice)")


def _run_options(p: argparse.ArgumentParser) -> None:
    add_options(p, LabRun, path=LAB)


def _threads(args) -> None:
    """Apply --threads if given."""
    threads = given_options(args, LAB).get("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _limit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=None, help="use only the first N images per split")


def _tower_options(p: argparse.ArgumentParser, preset) -> None:
    """The towers' optimisation flags (tiny CLIP, tiny LM), from `TrainConfig`."""
    add_options(p, type(preset), path=TOWER, defaults=preset, only=TOWER_FLAGS)


def _tower_config(args, preset):
    return apply_changes(preset, given_options(args, TOWER))


def _tower_preset(steps: int, batch_size: int, lr: float):
    from modalign.train import TrainConfig

    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, save_steps=100)


CLIP_TOWER = (800, 64, 5e-4)
LM_TOWER = (1200, 32, 1e-3)


WORLD_FIELDS = ("seed", "sizes", "image_size", "glyph_scale", "corpus_scenes")
CYCLE_FIELDS = ("sizes", "image_size", "glyph_scale", "caption_level", "multi_turn", "from_scratch")


def _cycle_options(p: argparse.ArgumentParser, fields: tuple[str, ...], title: str) -> None:
    """Flags of `CycleConfig`'s fields (world sizes, image size, glyphs, caption level ...)."""
    from modalign_lab.pipeline.cycle import CycleConfig

    add_options(p, CycleConfig, path=CYCLE, only=fields, title=title)


def _cycle_settings(args):
    """`CycleConfig()` with its flags given."""
    from modalign_lab.pipeline.cycle import CycleConfig

    return apply_changes(CycleConfig(), given_options(args, CYCLE))


def _recipe(args, preset, n_samples: int):
    """The flags' recipe on top of `preset` (and `--config`), steps and rate resolved."""
    return recipe_from_options(args, preset, read_config(args)).resolved(n_samples)


def _print(obj: dict) -> int:
    """Metrics as JSON on stdout."""
    print(json.dumps(obj, indent=2))
    return 0


def _data(args) -> int:
    from modalign_lab.towers.train import make_data

    world = _cycle_settings(args)
    make_data(args.out, seed=world.seed, sizes=world.sizes, image_size=world.image_size,
              corpus_scenes=world.corpus_scenes, glyph_scale=world.glyph_scale)  # fmt: skip
    return _print(
        {"data": str(args.out), "manifest": json.loads((args.out / "manifest.json").read_text())}
    )


def _train_clip(args) -> int:
    from modalign_lab.towers.specs import ClipSpec
    from modalign_lab.towers.train import train_clip
    from modalign_lab.world.dataset import read_manifest
    from modalign_lab.world.vocab import GRID

    _threads(args)
    size = read_manifest(args.data)["image_size"]
    patch = args.patch_size if args.patch_size is not None else size // GRID
    spec = ClipSpec(image_size=size, patch_size=patch)
    locked = None
    if args.locked_vision is not None:  # LiT: a text tower for this LLaVA's own vision tower
        from modalign_lab.towers.llava import load_llava

        locked = load_llava(args.locked_vision)[0].model.vision_tower
        v = locked.config
        spec = ClipSpec(image_size=v.image_size, patch_size=v.patch_size,
                        vision_hidden=v.hidden_size, vision_layers=v.num_hidden_layers,
                        heads=v.num_attention_heads)  # fmt: skip
    hard = not args.no_hard_negatives
    config = _tower_config(args, _tower_preset(*CLIP_TOWER))
    metrics = train_clip(args.data, args.out, spec, config, args.limit, hard_negatives=hard,
                         locked_vision=locked)  # fmt: skip
    return _print(metrics)


def _train_lm(args) -> int:
    from modalign_lab.towers.specs import LMSpec
    from modalign_lab.towers.train import train_lm

    _threads(args)
    config = _tower_config(args, _tower_preset(*LM_TOWER))
    return _print(train_lm(args.data, args.out, LMSpec(), config, args.limit))


def _n_train(data: Path, limit: int | None) -> int:
    from modalign_lab.world.dataset import read_manifest

    n = read_manifest(data)["sizes"].get("train", 0)
    return min(n, limit) if limit else n


def _pretrain(args) -> int:
    from modalign_lab.pipeline.cycle import lab_preset
    from modalign_lab.pipeline.stages import pretrain

    _threads(args)
    towers_given = bool(args.clip and args.lm) and args.base is None
    if not towers_given and not (args.base is not None and not args.clip and not args.lm):
        raise ConfigError("lab pretrain needs --clip DIR and --lm DIR, or --base LLAVA_DIR")
    recipe = _recipe(args, lab_preset("pretrain"), _n_train(args.data, args.limit))
    return _print(
        pretrain(
            args.data,
            args.out,
            recipe,
            clip=args.clip,
            lm=args.lm,
            base=args.base,
            level=_cycle_settings(args).caption_level,
            limit=args.limit,
        )
    )


def _sft(args) -> int:
    from modalign_lab.pipeline.cycle import lab_preset
    from modalign_lab.pipeline.stages import sft

    _threads(args)
    recipe = _recipe(args, lab_preset("sft"), _n_train(args.data, args.limit))
    return _print(
        sft(
            args.data,
            args.model,
            args.out,
            recipe,
            args.limit,
            multi_turn=_cycle_settings(args).multi_turn,
        )
    )


def _eval(args) -> int:
    from modalign_lab.pipeline.stages import evaluate

    _threads(args)
    if args.json:
        check_writable(args.json, "--json")
    level = _cycle_settings(args).caption_level
    report = evaluate(args.model, args.data, args.split, level=level, limit=args.limit)
    if args.json:
        atomic_write_json(args.json, report)
    return _print(report)


def _cycle(args) -> int:
    from modalign_lab.pipeline.cycle import run_cycle

    _threads(args)
    return _print(run_cycle(args.out, cycle_config(args), base=args.base))


def cycle_presets():
    """(pre-training, SFT) recipes of `lab cycle` with no flags: the lab pre-training preset with
    the MIR monitor every 100 steps, and the cycle's own SFT."""
    from modalign.train import MonitorSettings
    from modalign_lab.pipeline.cycle import CycleConfig, lab_preset

    pretrain = lab_preset("pretrain", monitor=MonitorSettings(every=100, stop=False))
    return pretrain, CycleConfig().sft


def cycle_config(args):
    """The CycleConfig `lab cycle` flags describe: the training flags shape pre-training (the
    cognition turns, question-answer turns, go into the SFT data); `--seed`, `--save-steps` and
    `--quiet` apply to both stages; the SFT's own flags are `--sft-steps`, `--sft-lr`,
    `--sft-vision`."""
    from dataclasses import replace

    pretrain, sft = cycle_presets()
    config = _cycle_settings(args)
    given = given_options(args, RECIPE)
    turns = {k: v for k, v in given.items() if k.startswith("stage.cognition.")}
    flags = {k: v for k, v in given.items() if k not in turns}
    pretrain = recipe_from_options(args, pretrain, read_config(args), given=flags)
    pretrain = pretrain.resolved(config.sizes["train"])
    t = pretrain.train
    sft = replace(sft, train=replace(sft.train, seed=t.seed, save_steps=t.save_steps,
                                     progress=t.progress))  # fmt: skip
    sft = apply_changes(sft, {**given_options(args, SFT), **turns})
    return replace(config, seed=t.seed, pretrain=pretrain, sft=sft)


def _legibility(args) -> int:
    from modalign_lab.probes.legibility import glyph_legibility

    _threads(args)
    return _print(glyph_legibility(args.model, args.data, args.train, connector=args.connector,
                                   vae=args.vae))  # fmt: skip


def _vlsa_parts(args) -> int:
    from modalign_lab.towers.diffusion import DiffusionSpec, make_diffusion, make_vq
    from modalign_lab.world.dataset import read_manifest

    _threads(args)
    size = read_manifest(args.data)["image_size"]
    spec = DiffusionSpec.for_world(size, steps=args.steps, seed=args.seed)
    diffusion = make_diffusion(args.data, args.out / "diffusion", spec)
    vq = make_vq(args.data, args.out / "vq", spec)
    drop = ("settings", "loss_every_100")
    return _print({"diffusion": {k: v for k, v in diffusion.items() if k not in drop},
                   "vq": {k: v for k, v in vq.items() if k not in drop}})  # fmt: skip


def _study(args) -> int:
    from dataclasses import replace

    from modalign_lab.studies.catalog import STUDIES
    from modalign_lab.studies.study import run_study

    _threads(args)
    study = STUDIES[args.name]()
    cycle = study.cycle
    if args.train or args.pretrain_steps or args.sft_steps:  # a smaller study (checks, tests)
        pt, sft = cycle.pretrain, cycle.sft
        cycle = replace(
            cycle,
            sizes={**cycle.sizes, "train": args.train or cycle.sizes["train"]},
            pretrain=replace(
                pt, train=replace(pt.train, steps=args.pretrain_steps or pt.train.steps)
            ),
            sft=replace(sft, train=replace(sft.train, steps=args.sft_steps or sft.train.steps)),
        )
    archive = None if args.no_archive else (args.archive or args.report_dir / "points")
    summary = run_study(study, args.out, args.seeds, args.report_dir, cycle=cycle,
                        variants=args.variants, reuse=not args.no_reuse,
                        archive=archive, jobs=args.jobs,
                        threads=given_options(args, LAB).get("threads"))  # fmt: skip
    print(f"report: {args.report_dir / args.name}.md")
    return _print({k: v["spread"] for k, v in summary["sft"].items()})


def _study_index(args) -> int:
    from modalign_lab.studies.index import write_index

    rows = write_index(args.dir, args.out)
    out = args.out or args.dir
    print(f"index of {len(rows)} study x SFT rows: {out / 'index.md'}")
    return 0


def _trace(args) -> int:
    from modalign.assets import default_model_path
    from modalign_lab.pipeline.cycle import CycleConfig
    from modalign_lab.studies.trace import trace_pretraining, write_trace_report
    from modalign_lab.towers.train import make_data

    _threads(args)
    c = CycleConfig()
    data = args.data or args.out / "data"
    make_data(data, seed=0, sizes=c.sizes, image_size=c.image_size,
              corpus_scenes=c.corpus_scenes, tokenizer_from=default_model_path())  # fmt: skip
    trace = trace_pretraining(args.out, data, every=args.every, n=args.n)
    summary = write_trace_report(trace, args.report_dir)
    print(f"report: {args.report_dir / 'mir_trace'}.md")
    return _print({"rows": len(summary["rows"])})


def _build_default(args) -> int:
    from dataclasses import replace

    from modalign_lab.pipeline.build_default import DefaultRecipe, build_default

    recipe = replace(DefaultRecipe(), threads=given_options(args, LAB).get("threads") or 1)
    build = build_default(args.work, args.out, recipe)
    return _print(
        {
            "installed": str(args.out or "package assets"),
            "metrics": build["metrics"],
            "timings": build["timings"],
        }
    )


def configure(lab: argparse.ArgumentParser) -> None:
    """Add the sub-commands of `modalign lab`."""

    sub = lab.add_subparsers(dest="lab_command", metavar="STEP", required=True)

    p = sub.add_parser("data", help="generate images, captions (4 levels), VQA, corpus, tokenizer")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    _cycle_options(p, WORLD_FIELDS, "world")
    p.set_defaults(func=_data)

    p = sub.add_parser("train-clip", help="contrastive tiny CLIP on train images x captions")
    p.add_argument("--data", type=Path, required=True, help="a lab dataset folder")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--no-hard-negatives",
        action="store_true",
        help="plain CLIP loss (default adds one minimally edited caption per image, NegCLIP)",
    )
    p.add_argument(
        "--locked-vision",
        type=Path,
        help="a LLaVA folder: copy and freeze its vision tower, train only the text side (LiT)",
    )
    p.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="ViT patch side in px (default: image size / 3, one patch per grid cell)",
    )
    _tower_options(p, _tower_preset(*CLIP_TOWER))
    _limit(p)
    _run_options(p)
    p.set_defaults(func=_train_clip)

    p = sub.add_parser("train-lm", help="tiny Llama on the text corpus")
    p.add_argument("--data", type=Path, required=True, help="a lab dataset folder")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    _tower_options(p, _tower_preset(*LM_TOWER))
    _limit(p)
    _run_options(p)
    p.set_defaults(func=_train_lm)

    p = _stage_command(sub, "pretrain", "LLaVA stage 1 (default: connector only, captions)",
                       ("caption_level",), "captions")  # fmt: skip
    p.add_argument("--clip", type=Path, help="train-clip output directory")
    p.add_argument("--lm", type=Path, help="train-lm output directory")
    p.add_argument("--base", type=Path, help="reuse a saved LLaVA's towers (fresh connector)")
    p.set_defaults(func=_pretrain)

    p = _stage_command(sub, "sft", "LLaVA stage 2 (default: connector + LLM) on VQA chats",
                       ("multi_turn",), "conversations")  # fmt: skip
    p.add_argument("--model", type=Path, required=True, help="pretrain output directory")
    p.set_defaults(func=_sft)

    p = sub.add_parser("eval", help="held-out caption loss and VQA accuracy per question type")
    p.add_argument("--data", type=Path, required=True, help="a lab dataset folder")
    p.add_argument("--model", type=Path, required=True, help="a lab LLaVA (stage folder)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="the split to evaluate (default test)")  # fmt: skip
    _cycle_options(p, ("caption_level",), "captions")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    _run_options(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "cycle",
        help="data -> pre-train -> MIR -> SFT -> accuracy, timed (training flags: pre-training)",
    )
    p.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    p.add_argument(
        "--base",
        type=Path,
        default=None,
        help="towers from this LLaVA (default: the embedded default)",
    )
    _cycle_options(p, CYCLE_FIELDS, "the cycle")
    _sft_options(p)
    _run_options(p)
    add_config_option(p)
    add_recipe_options(p, cycle_presets()[0])
    p.set_defaults(func=_cycle)

    p = sub.add_parser(
        "vlsa-parts", help="train the VLSA VAE (+ fresh denoiser) and VQ model on a world's images"
    )
    p.add_argument("--data", type=Path, required=True, help="a lab dataset folder")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/diffusion and OUT/vq")
    p.add_argument("--steps", type=int, default=600, help="training steps of each (default 600)")
    p.add_argument("--seed", type=int, default=0, help="seed of both trainings (default 0)")
    _run_options(p)
    p.set_defaults(func=_vlsa_parts)

    p = sub.add_parser(
        "legibility",
        help="linear probe of glyph identity: the low-res view's cell vs the cell's own tile",
    )
    p.add_argument("--model", type=Path, required=True, help="a lab LLaVA (its vision tower)")
    p.add_argument("--data", type=Path, required=True, help="a world (e.g. 288 px)")
    p.add_argument("--train", type=int, default=1500, help="training images for the probe")
    p.add_argument("--connector", action="store_true",
                   help="probe the connector's output tokens over the glyph's cell (what the LLM "
                   "receives) instead of the tower's features")  # fmt: skip
    p.add_argument("--vae", type=Path,
                   help="an AutoencoderKL folder (e.g. PARTS/diffusion/vae): probe the "
                   "reconstruction target (its latent over the glyph's cell) and the tower on "
                   "the cell of its decoded image")  # fmt: skip
    _run_options(p)
    p.set_defaults(func=_legibility)

    p = sub.add_parser("study", help="a named grid of pre-training variants x seeds, with a report")
    p.add_argument(
        "name",
        help="study name: toolkit, alignment, vlsa, scale, scale_unlocked, detail, recipe, steps, "
        "epochs, testbed",
    )
    p.add_argument("--out", type=Path, required=True, help="runs folder (resumable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default 0 1)")
    p.add_argument("--report-dir", type=Path, default=REPORT_DIR,
                   help=f"where NAME.json/.md/.png go (default {REPORT_DIR})")  # fmt: skip
    p.add_argument("--variants", nargs="+", help="only these variants")
    p.add_argument("--train", type=int, help="training images (default: the cycle's)")
    p.add_argument("--pretrain-steps", type=int, help="default: the cycle's")
    p.add_argument("--sft-steps", type=int, help="default: the cycle's")
    p.add_argument("--no-reuse", action="store_true",
                   help="train every point even where another study under --out has finished the "
                   "same cycle (default: copy it)")  # fmt: skip
    p.add_argument("--archive", type=Path,
                   help="keep every finished point's record (JSON) here and restore a point "
                   "missing under --out from it (default: REPORT_DIR/points)")  # fmt: skip
    p.add_argument("--no-archive", action="store_true", help="neither keep nor restore records")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many points side by side, each in its own process with "
                   "--threads torch threads (default: the CPUs shared out); progress goes to "
                   "OUT/NAME/VARIANT/seedK.log (default 1: one after another, here)")  # fmt: skip
    _run_options(p)
    p.set_defaults(func=_study)

    p = sub.add_parser("study-index",
                       help="one table of every study report: which measure ranks post-SFT accuracy")  # fmt: skip
    p.add_argument("--dir", type=Path, default=REPORT_DIR,
                   help=f"folder of study reports (default {REPORT_DIR})")  # fmt: skip
    p.add_argument("--out", type=Path, help="where index.{md,json,png} go (default: --dir)")
    p.set_defaults(func=_study_index)

    p = sub.add_parser(
        "trace", help="what the MIR trace of pre-training is made of (norms, FD terms, controls)"
    )
    p.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    p.add_argument("--data", type=Path, help="dataset folder (default OUT/data, made if missing)")
    p.add_argument("--every", type=int, default=50, help="steps between measurements (50)")
    p.add_argument("--n", type=int, default=100, help="held-out probe pairs (100)")
    p.add_argument("--report-dir", type=Path, default=REPORT_DIR,
                   help=f"where mir_trace.json/.md/.png go (default {REPORT_DIR})")  # fmt: skip
    _run_options(p)
    p.set_defaults(func=_trace)

    p = sub.add_parser(
        "build-default", help="rebuild the embedded default model + eval set bit-for-bit"
    )
    p.add_argument(
        "--work", type=Path, required=True, help="scratch directory for data and checkpoints"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="install here instead of the package assets"
    )
    _run_options(p)  # the shipped build used 1 thread (the default here)
    p.set_defaults(func=_build_default)


def _stage_command(sub: Any, stage: str, help_text: str, fields: tuple[str, ...], title: str):
    """`lab pretrain` / `lab sft`: the world's data and a run folder, the cycle fields named, and
    every training flag (defaults: the lab's preset for the stage)."""
    from modalign_lab.pipeline.cycle import lab_preset

    p = sub.add_parser(stage, help=help_text)
    p.add_argument("--data", type=Path, required=True, help="a lab dataset folder")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    _cycle_options(p, fields, title)
    _limit(p)
    _run_options(p)
    add_config_option(p)
    add_recipe_options(p, lab_preset(stage))
    return p


def _sft_options(p: argparse.ArgumentParser) -> None:
    """The cycle's SFT flags: `--sft-steps`, `--sft-lr` (TrainConfig), `--sft-vision` (unlock)."""
    from modalign.train import TrainConfig, UnlockSpec
    from modalign_lab.pipeline.cycle import CycleConfig

    sft = CycleConfig().sft
    g = p.add_argument_group("the cycle's SFT")
    add_options(g, TrainConfig, path=f"{SFT}.train", defaults=sft.train, only=("steps", "lr"),
                prefix="sft-")  # fmt: skip
    add_options(g, UnlockSpec, path=f"{SFT}.stage.unlock", defaults=sft.stage.unlock,
                only=("vision",), prefix="sft-")  # fmt: skip
