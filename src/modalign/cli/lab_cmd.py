"""`modalign lab ...`: generate the miniature world, train each stage, evaluate, run the cycle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _level(value: str) -> int:
    """Caption level 0-3 or 'mixed'."""
    from modalign.lab.samples import MIXED, check_level

    return MIXED if value == "mixed" else check_level(int(value))


def _common(p: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    """Flags shared by training commands."""
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
    p.add_argument("--batch-size", type=int, default=batch, help=f"batch size (default {batch})")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order (default 0)")
    p.add_argument("--save-steps", type=int, default=100, help="checkpoint every N steps (0: none)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images per split")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_config(args):
    """TrainConfig from parsed flags."""
    from modalign.lab.trainer import TrainConfig

    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        save_steps=args.save_steps,
        progress=not args.quiet,
    )


def _threads(args) -> None:
    """Apply --threads if given."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _print(obj: dict) -> int:
    """Metrics as JSON on stdout."""
    print(json.dumps(obj, indent=2))
    return 0


def _data(args) -> int:
    from modalign.lab.stages import make_data

    make_data(
        args.out,
        seed=args.seed,
        sizes={"train": args.train, "val": args.val, "test": args.test},
        image_size=args.image_size,
        corpus_scenes=args.corpus_scenes,
    )
    return _print(
        {"data": str(args.out), "manifest": json.loads((args.out / "manifest.json").read_text())}
    )


def _train_clip(args) -> int:
    from modalign.lab.specs import ClipSpec
    from modalign.lab.stages import train_clip
    from modalign.lab.world.dataset import read_manifest
    from modalign.lab.world.vocab import GRID

    _threads(args)
    size = read_manifest(args.data)["image_size"]
    patch = args.patch_size if args.patch_size is not None else size // GRID
    spec = ClipSpec(image_size=size, patch_size=patch)
    return _print(
        train_clip(
            args.data,
            args.out,
            spec,
            _train_config(args),
            args.limit,
            hard_negatives=not args.no_hard_negatives,
        )
    )


def _train_lm(args) -> int:
    from modalign.lab.specs import LMSpec
    from modalign.lab.stages import train_lm

    _threads(args)
    return _print(train_lm(args.data, args.out, LMSpec(), _train_config(args), args.limit))


def _pretrain(args) -> int:
    from modalign.lab.stages import pretrain, pretrain_from_llava

    _threads(args)
    cfg = _train_config(args)
    opts = {"level": args.level, "limit": args.limit, "mir_every": args.mir_every}
    if args.base is not None:
        if args.clip or args.lm:
            raise ValueError("give either --base or --clip/--lm, not both")
        return _print(pretrain_from_llava(args.data, args.base, args.out, cfg, **opts))
    if not (args.clip and args.lm):
        raise ValueError("pretrain needs --clip DIR and --lm DIR (or --base LLAVA_DIR)")
    return _print(pretrain(args.data, args.clip, args.lm, args.out, cfg, **opts))


def _sft(args) -> int:
    from modalign.lab.stages import sft

    _threads(args)
    return _print(
        sft(
            args.data,
            args.model,
            args.out,
            _train_config(args),
            args.limit,
            multi_turn=args.multi_turn,
            unlock_vision=args.unlock_vision,
        )
    )


def _eval(args) -> int:
    from modalign.lab.stages import evaluate

    _threads(args)
    report = evaluate(args.model, args.data, args.split, level=args.level, limit=args.limit)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return _print(report)


def _cycle(args) -> int:
    from dataclasses import replace

    from modalign.lab.cycle import CycleConfig, run_cycle

    _threads(args)
    cfg = CycleConfig(
        seed=args.seed,
        from_scratch=args.from_scratch,
        caption_level=args.level,
        multi_turn=not args.single_turn,
        unlock_vision=args.unlock_vision,
    )
    # Unset flags keep CycleConfig's defaults (one place for the recipe).
    pt_steps = args.pretrain_steps or cfg.pretrain.steps
    sft_steps = args.sft_steps or cfg.sft.steps
    cfg = replace(
        cfg,
        pretrain=replace(cfg.pretrain, steps=pt_steps, seed=args.seed, progress=not args.quiet),
        sft=replace(cfg.sft, steps=sft_steps, seed=args.seed, progress=not args.quiet),
        sizes={**cfg.sizes, "train": args.train or cfg.sizes["train"]},
    )
    return _print(run_cycle(args.out, cfg, base=args.base))


def _build_default(args) -> int:
    from dataclasses import replace

    from modalign.lab.build_default import DefaultRecipe, build_default

    recipe = replace(DefaultRecipe(), threads=args.threads or 1)
    build = build_default(args.work, args.out, recipe)
    return _print(
        {
            "installed": str(args.out or "package assets"),
            "metrics": build["metrics"],
            "timings": build["timings"],
        }
    )


def register(subparsers) -> None:
    """Add `modalign lab` and its sub-commands."""
    lab = subparsers.add_parser(
        "lab", help="miniature LVLM world: data, tiny models, training, evaluation"
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="STEP", required=True)

    p = sub.add_parser("data", help="generate images, captions (4 levels), VQA, corpus, tokenizer")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--image-size", type=int, default=96, help="64-96 px")
    p.add_argument(
        "--corpus-scenes", type=int, default=20000, help="unrendered scenes in the text corpus"
    )
    p.set_defaults(func=_data)

    p = sub.add_parser("train-clip", help="contrastive tiny CLIP on train images x captions")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--no-hard-negatives",
        action="store_true",
        help="plain CLIP loss (default adds one minimally edited caption per image, NegCLIP)",
    )
    p.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="ViT patch side in px (default: image size / 3, one patch per grid cell)",
    )
    _common(p, 800, 64, 5e-4)
    p.set_defaults(func=_train_clip)

    p = sub.add_parser("train-lm", help="tiny Llama on the text corpus")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    _common(p, 1200, 32, 1e-3)
    p.set_defaults(func=_train_lm)

    p = sub.add_parser("pretrain", help="LLaVA stage 1: connector only, image captioning")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clip", type=Path, help="train-clip output directory")
    p.add_argument("--lm", type=Path, help="train-lm output directory")
    p.add_argument("--base", type=Path, help="reuse a saved LLaVA's towers (fresh connector)")
    p.add_argument(
        "--level", type=_level, default=3, help="caption detail level 0-3 or 'mixed' (default 3)"
    )
    p.add_argument(
        "--mir-every",
        type=int,
        default=0,
        help="also record MIR on 100 test pairs every N steps (metrics.json: mir_trace)",
    )
    _common(p, 1600, 32, 1e-3)
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("sft", help="LLaVA stage 2: connector + LLM on VQA (chat template)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True, help="pretrain output directory")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--multi-turn", action="store_true", help="one conversation per image (all its questions)"
    )
    p.add_argument("--unlock-vision", action="store_true", help="also train the vision tower")
    _common(p, 1500, 32, 1e-3)
    p.set_defaults(func=_sft)

    p = sub.add_parser("eval", help="held-out caption loss and VQA accuracy per question type")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--level", type=_level, default=3, help="caption level for the caption loss")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    p.set_defaults(func=_eval)

    p = sub.add_parser("cycle", help="data -> pre-train -> MIR -> SFT -> accuracy, timed")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--base",
        type=Path,
        default=None,
        help="towers from this LLaVA (default: the embedded default)",
    )
    p.add_argument("--from-scratch", action="store_true", help="also train CLIP and LM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=None, help="training images (default 4000)")
    p.add_argument("--level", type=_level, default=3, help="pre-training caption level")
    p.add_argument("--pretrain-steps", type=int, default=None, help="default 1600")
    p.add_argument("--sft-steps", type=int, default=None, help="default 1500")
    p.add_argument(
        "--single-turn", action="store_true", help="SFT on one question per sample (default: chat)"
    )
    p.add_argument("--unlock-vision", action="store_true", help="SFT also trains the vision tower")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cycle)

    p = sub.add_parser(
        "build-default", help="rebuild the embedded default model + eval set bit-for-bit"
    )
    p.add_argument(
        "--work", type=Path, required=True, help="scratch directory for data and checkpoints"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="install here instead of the package assets"
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the shipped build used 1)")
    p.set_defaults(func=_build_default)
