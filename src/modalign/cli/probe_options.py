"""Flags shared by the commands that run a model over probe pairs (`mir --model`, `validate`):
where the image/text pairs come from, and how the model sees them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from modalign.errors import ConfigError


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--images/--texts, --pairs or --dataset, and the seeded draw of --n pairs."""
    g = parser.add_argument_group("probe data")
    g.add_argument("--images", type=Path,
                   help="folder of images (paired at random with --texts)")  # fmt: skip
    g.add_argument("--texts", type=Path,
                   help="text file (one passage per line) or JSONL")  # fmt: skip
    g.add_argument("--pairs", type=Path,
                   help="JSONL/CSV of (image, text) pairs")  # fmt: skip
    g.add_argument("--dataset", help="Hugging Face dataset name or saved dataset folder")
    g.add_argument("--dataset-split", default="train", help="dataset split (default: train)")
    g.add_argument("--image-column", default="image", help="dataset image column")
    g.add_argument("--text-column", default="text", help="dataset text column")
    # --num-samples: same option, for launchers such as torchrun whose parser takes --n as an
    # ambiguous abbreviation of their own flags.
    g.add_argument("--n", "--num-samples", dest="n", type=int, default=100,
                   help="number of pairs (default: 100)")  # fmt: skip
    g.add_argument("--seed", type=int, default=0, help="seed of the pair selection (default: 0)")
    g.add_argument("--strict", action="store_true", help="fail on unreadable images/rows")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Batching, sequence layout, layers, device and dtype of the forward passes."""
    g = parser.add_argument_group("forward passes")
    g.add_argument("--batch-size", type=int, default=8, help="samples per forward pass")
    g.add_argument(
        "--template",
        choices=["chat", "plain", "official"],
        default=None,
        help="sequence layout: the model's chat template with the passage as the assistant turn "
        "(default), plain = BOS + image tokens + passage tokens, official = the official MIR "
        "protocol (default with --compat official)",
    )
    g.add_argument("--max-text-tokens", type=int, default=None, help="truncate longer passages")
    g.add_argument("--layers", default=None, help="decoder layers, e.g. '1-8,12' (default: all)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    g.add_argument(
        "--dtype", default="auto", help="auto|float32|bfloat16|float16 (auto: CUDA bf16)"
    )


def parse_layers(spec: str | None) -> list[int] | None:
    """'1-4,8' -> [1, 2, 3, 4, 8]; None/'all' -> None (every decoder layer)."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ConfigError(f"--layers: cannot parse {part!r} (use e.g. 1-8,12)") from None
    return out


def check_run_arguments(args: argparse.Namespace) -> None:
    """Positive sizes, before any work."""
    for name in ("n", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_text_tokens is not None and args.max_text_tokens < 1:
        raise ConfigError("--max-text-tokens must be >= 1")


def has_data(args: argparse.Namespace) -> bool:
    return bool(args.images or args.texts or args.pairs or args.dataset)


def use_default_data(args: argparse.Namespace) -> None:
    """No data given: the embedded default's own held-out probe set (images + passages)."""
    if has_data(args):
        return
    from modalign.assets import default_dir

    args.images = default_dir() / "eval" / "images"
    args.texts = default_dir() / "eval" / "passages.txt"


def source_from_args(args: argparse.Namespace) -> Any:
    """The `SampleSource` the data flags describe."""
    from modalign.data import SampleSource

    return SampleSource.from_args(
        images=args.images,
        texts=args.texts,
        pairs=args.pairs,
        hf_dataset=args.dataset,
        split=args.dataset_split,
        image_column=args.image_column,
        text_column=args.text_column,
        strict=args.strict,
    )
