"""`modalign train`: pre-train or fine-tune an HF LLaVA-family model from LLaVA-format data.

    modalign train --model PATH --data blip_558k.json --image-folder images/ --out runs/pt \\
        --stage pretrain [--connector mlp2x_gelu] [--moca] [--llm frozen|full|lora|first:N] \\
        [--objective mfid:0.001] [--mir-every 100 --mir-images probe/ --mir-texts texts.txt]
    torchrun --nproc_per_node 8 $(which modalign) train ...     # many processes (or accelerate launch)

A killed run resumes when re-run with the same flags; a finished one is not redone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign train`."""
    from modalign.cli.train_options import add_recipe_arguments

    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--model", required=True, help="HF model id or checkpoint folder (LLaVA family)")
    p.add_argument("--data", type=Path, required=True, help="LLaVA conversation .json / .jsonl")
    p.add_argument("--image-folder", type=Path, help="folder the records' image paths are under")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, model, logs)")
    p.add_argument("--stage", choices=["pretrain", "sft"], default="pretrain",
                   help="pretrain: plain template, connector only (lr 1e-3); sft: chat template, "
                   "connector + LLM (lr 2e-5)")  # fmt: skip
    p.add_argument("--plain-end", choices=["newline", "eos"], default="newline",
                   help="pre-training caption end: LLaVA's '\\n' (default) or the EOS token")  # fmt: skip
    p.add_argument("--limit", type=int, help="use the first N records (nested prefixes)")
    p.add_argument("--dtype", default="float32", help="weights dtype: float32 | bfloat16 | float16")
    probe = p.add_argument_group("MIR monitor probe set")
    probe.add_argument("--mir-images", type=Path, help="probe image folder")
    probe.add_argument("--mir-texts", type=Path, help="probe passages (one per line)")
    probe.add_argument("--mir-pairs", type=Path, help="probe (image, text) pairs file")
    add_recipe_arguments(p, steps=None, batch_size=16, lr=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from modalign.atomic import check_writable
    from modalign.cli.train_options import recipe_from_args
    from modalign.data.conversations import load_conversations
    from modalign.models.loading import load_model, load_processor, parse_dtype
    from modalign.train.recipe import prepare, train_stage

    check_writable(args.out / "stage.json", "--out")
    conversations = load_conversations(
        args.data, args.image_folder, require_image=args.stage == "pretrain", limit=args.limit
    )
    end = "\n" if args.plain_end == "newline" else "eos"
    recipe = recipe_from_args(args, args.stage, len(conversations), plain_end=end)
    probe = None
    if recipe.monitor is not None:
        from modalign.data import SampleSource

        source = SampleSource.from_args(images=args.mir_images, texts=args.mir_texts,
                                        pairs=args.mir_pairs)  # fmt: skip
        probe = source.sample(recipe.monitor.n, seed=0)
    import torch

    model = load_model(args.model, torch.device("cpu"), parse_dtype(args.dtype))
    processor = load_processor(args.model)
    model, processor = prepare(model, processor, recipe)
    summary = train_stage(model, processor, conversations, recipe, args.out, probe=probe)
    from modalign.measure.run import distributed_context

    if distributed_context()[0] == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "stopped_early_at", "train_loss")}))
        print(f"model written to {args.out / 'model'}")
    return 0
