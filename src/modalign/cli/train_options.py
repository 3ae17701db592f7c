"""The training flags, defined once: `modalign train` and `modalign lab pretrain|sft|cycle` add
them with `add_recipe_arguments` and turn them into a `Recipe` with `recipe_from_args`."""

from __future__ import annotations

import argparse
import math
from typing import Any

COMPONENTS_WITH_LR = ("connector", "llm", "vision", "moca", "lora")


def add_recipe_arguments(
    p: argparse.ArgumentParser,
    *,
    steps: int | None,
    batch_size: int,
    lr: float | None,
    mir_every: int = 0,
) -> None:
    """Add every training flag (defaults: the given steps/batch/lr; None lr = the stage's)."""
    g = p.add_argument_group("model changes")
    g.add_argument("--connector", metavar="SPEC",
                   help="give the model a fresh connector: linear, mlp2x_gelu, mlp4x_gelu, qformer, "
                   "resampler, pool, sa_perceiver (high-res tiles) (options: "
                   "'qformer:num_queries=32,text_input=instruction', 'sa_perceiver:grid_rows=2')")  # fmt: skip
    g.add_argument("--moca", action="store_true", help="attach MoCa (per-layer vision scale/shift)")
    g.add_argument(
        "--moca-std", type=float, default=0.0, help="MoCa init std (default 0: identity)"
    )

    g = p.add_argument_group("what trains (defaults: the stage's, LLaVA-1.5)")
    g.add_argument("--llm", metavar="TUNE", help="frozen | full | lora | first:N")
    g.add_argument("--vision", metavar="TUNE", help="frozen | full | from:N")
    g.add_argument("--connector-tune", metavar="TUNE", help="frozen | full (default full)")
    g.add_argument("--off-by-one-compat", action="store_true",
                   help="first:N unlocks layers 0..N like the official --tune_llm_utill_layer")  # fmt: skip
    g.add_argument("--lora-r", type=int, default=64, help="LoRA rank (default 64)")
    g.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    g.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    g.add_argument(
        "--lora-targets", help="comma-separated module suffixes (default: all LLM linears)"
    )
    g.add_argument("--lora-keep", action="store_true", help="keep LoRA unmerged after the stage")

    g = p.add_argument_group("objectives and optimisation")
    g.add_argument("--objective", action="append", default=[], metavar="NAME[:W][,K=V]",
                   help="add an alignment objective to the LM loss (repeatable), e.g. mfid:0.001 "
                   "or sea:1,labels=cache/")  # fmt: skip
    g.add_argument("--steps", type=int, default=steps,
                   help=f"optimizer steps (default {steps or 'one epoch, or --epochs'})")  # fmt: skip
    g.add_argument("--epochs", type=float, default=None, help="epochs instead of --steps")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"per-device batch (default {batch_size})")  # fmt: skip
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--lr", type=float, default=lr,
                   help=f"peak learning rate (default {lr or 'the stage: 1e-3 pre-train, 2e-5 SFT'})")  # fmt: skip
    for comp in COMPONENTS_WITH_LR:
        g.add_argument(
            f"--lr-{comp}", type=float, default=None, help=f"learning rate of the {comp}"
        )
    g.add_argument("--warmup-ratio", type=float, default=0.03, help="warmup fraction (0.03)")
    g.add_argument(
        "--schedule", default="cosine", choices=["cosine", "linear", "constant_with_warmup"]
    )
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0, help="seed of init, data order (default 0)")
    g.add_argument("--save-steps", type=int, default=100, help="checkpoint every N steps (0: none)")
    g.add_argument("--log-steps", type=int, default=25, help="log every N steps")
    g.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    g.add_argument("--gradient-checkpointing", action="store_true")
    g.add_argument("--report-to", action="append", default=[], metavar="LOGGER",
                   help="Trainer logger: tensorboard, wandb ... (repeatable)")  # fmt: skip
    g.add_argument("--max-length", type=int, default=2048, help="truncate longer samples")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    g = p.add_argument_group("VLSA cognition turns (chat stages)")
    g.add_argument("--cognition", metavar="KINDS",
                   help="insert pixel and/or VQ question-answer turns: 'pixel', 'vq' or 'pixel,vq'")  # fmt: skip
    g.add_argument("--cognition-p", type=float, default=0.3,
                   help="probability that a sample gets one such turn (default 0.3)")  # fmt: skip
    g.add_argument("--cognition-grid", type=int, default=8,
                   help="pixel target grid G: the (G/2)^2 colours of a quarter (default 8)")  # fmt: skip
    g.add_argument("--vq-model", metavar="FOLDER", help="a diffusers VQModel for 'vq' turns")
    g.add_argument("--vq-size", type=int, help="image size the VQ model encodes (default: its own)")

    g = p.add_argument_group("MIR monitor")
    g.add_argument("--mir-every", type=int, default=mir_every,
                   help=f"score MIR on the probe set every N steps (0: off; default {mir_every})")  # fmt: skip
    g.add_argument("--mir-patience", type=int, default=3, help="plateau window in evaluations")
    g.add_argument("--mir-delta", type=float, default=0.01, help="plateau: relative change < delta")
    g.add_argument("--mir-min-steps", type=int, default=0, help="no early stop before this step")
    g.add_argument("--mir-n", type=int, default=100, help="probe pairs (default 100)")
    g.add_argument("--mir-early-stop", action="store_true",
                   help="stop training when the smoothed MIR has plateaued (default: record only)")  # fmt: skip


def cognition_from_args(args: argparse.Namespace):
    """The CognitionSpec of the --cognition flags, or None without them."""
    if not args.cognition:
        return None
    from modalign.methods.vlsa.cognition_turns import CognitionSpec

    kinds = tuple(k.strip() for k in args.cognition.split(",") if k.strip())
    return CognitionSpec(kinds=kinds, probability=args.cognition_p, grid=args.cognition_grid,
                         vq_model=args.vq_model, vq_size=args.vq_size)  # fmt: skip


def recipe_from_args(args: argparse.Namespace, stage: str, n_samples: int, **stage_changes: Any):
    """The Recipe the flags describe, for `stage` and a dataset of `n_samples` conversations."""
    from modalign.errors import ConfigError
    from modalign.methods.lora import LoraSpec
    from modalign.methods.objectives import ObjectiveSpec
    from modalign.train.fit import TrainConfig
    from modalign.train.recipe import MonitorSettings, Recipe
    from modalign.train.stage import DEFAULT_LR, Stage
    from modalign.train.unlock import UnlockSpec

    base = Stage.defaults(stage)
    targets = tuple(t for t in (args.lora_targets or "").split(",") if t) or None
    unlock = UnlockSpec(
        llm=args.llm or base.unlock.llm,
        vision=args.vision or base.unlock.vision,
        connector=args.connector_tune or base.unlock.connector,
        moca=args.moca,
        off_by_one_compat=args.off_by_one_compat,
        lora=LoraSpec(
            r=args.lora_r,
            alpha=args.lora_alpha,
            dropout=args.lora_dropout,
            targets=targets,
            merge=not args.lora_keep,
        ),
    )
    lrs = {c: getattr(args, f"lr_{c}") for c in COMPONENTS_WITH_LR if getattr(args, f"lr_{c}")}
    cognition = cognition_from_args(args)
    if cognition is not None:
        stage_changes.setdefault("cognition", cognition)
    stage_obj = Stage.defaults(
        stage,
        unlock=unlock,
        component_lrs=lrs,
        objectives=tuple(ObjectiveSpec.parse(o) for o in args.objective),
        max_length=args.max_length,
        **stage_changes,
    )
    per_step = args.batch_size * args.grad_accum
    if args.epochs is not None:
        if args.epochs <= 0:
            raise ConfigError("--epochs must be positive")
        steps = math.ceil(args.epochs * n_samples / per_step)
    else:
        steps = args.steps or math.ceil(n_samples / per_step)
    train = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr or DEFAULT_LR[stage],
        seed=args.seed,
        grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        save_steps=args.save_steps,
        log_steps=args.log_steps,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        report_to=tuple(args.report_to),
        progress=not args.quiet,
    )
    monitor = None
    if args.mir_every:
        monitor = MonitorSettings(
            every=args.mir_every, patience=args.mir_patience, delta=args.mir_delta,
            min_steps=args.mir_min_steps, stop=args.mir_early_stop, n=args.mir_n,
        )  # fmt: skip
    if args.connector is not None:
        from modalign.methods.connectors import ConnectorSpec

        ConnectorSpec.parse(args.connector)  # an unknown name or option fails now
    return Recipe(stage_obj, train, args.connector, args.moca, args.moca_std, monitor)
