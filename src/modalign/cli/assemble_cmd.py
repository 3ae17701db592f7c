"""`modalign assemble`: turn a LLaVA-style pre-training run (LLM + tower + connector) into HF LLaVA."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign assemble`."""
    parser.description = (
        "Assemble a LlavaForConditionalGeneration + LlavaProcessor from the parts of an original "
        "LLaVA-style pre-training run and save it, so `modalign mir --model OUT` can score it."
    )
    parser.add_argument("--llm", required=True, metavar="DIR", help="base LLM folder (HF format)")
    parser.add_argument(
        "--vision-tower", required=True, metavar="DIR", help="CLIP model or vision-model folder"
    )
    parser.add_argument(
        "--projector",
        required=True,
        metavar="PATH",
        help="mm_projector.bin / .safetensors, or the run folder holding it (and its config.json)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="new (or empty) output folder")
    parser.add_argument(
        "--projector-type", choices=["mlp2x_gelu", "linear"], help="default: from the run / keys"
    )
    parser.add_argument(
        "--vision-feature-layer", type=int, help="vision layer fed to the connector (default -2)"
    )
    parser.add_argument(
        "--select-strategy",
        choices=["default", "full"],
        help="default drops the CLS token (LLaVA's 'patch'); full keeps it",
    )
    parser.add_argument("--image-token", default="<image>", help="image placeholder token")
    parser.add_argument(
        "--dtype", default="auto", help="auto (the LLM's), float32, bfloat16 or float16"
    )
    parser.add_argument(
        "--pad-to-square", action="store_true", help="pad images to square (LLaVA-1.5 fine-tuning)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Assemble, save, and print what was built; bad inputs raise ModalignError (exit 2 in main)."""
    from modalign.models.surgery.assemble import assemble_llava

    model, processor = assemble_llava(
        args.llm,
        args.vision_tower,
        args.projector,
        args.out,
        projector_type=args.projector_type,
        vision_feature_layer=args.vision_feature_layer,
        vision_feature_select_strategy=args.select_strategy,
        image_token=args.image_token,
        dtype=args.dtype,
        pad_to_square=args.pad_to_square,
    )
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    kind = "mlp2x_gelu" if config.projector_hidden_act == "gelu" else "linear"
    print(f"assembled LLaVA model written to {args.out}")
    print(
        f"  {params / 1e6:.1f}M parameters, dtype {config.dtype}, projector "
        f"{kind}, "
        f"vision layer {config.vision_feature_layer}, strategy {config.vision_feature_select_strategy}"
    )
    print(
        f"  {config.image_seq_length} image tokens per image ({processor.image_token!r}, "
        f"id {config.image_token_id})"
    )
    return 0
