"""`modalign mir --tokens STATES.safetensors`: MIR of saved per-layer token tensors."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from modalign.cli.outputs import check_outputs, print_baselines, print_summary, read_sections
from modalign.errors import DataError
from modalign.measure.settings import TOKEN_RUN
from modalign.metrics import compute_mir

_KEY = re.compile(r"^(vision|text)\.(\d+)$")


def load_token_file(path: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer vision and text tensors from a safetensors file (safe: no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise DataError(f"token file not found: {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from exc
    layers: dict[str, dict[int, torch.Tensor]] = {"vision": {}, "text": {}}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise DataError(f"{path}: unexpected key {key!r} (expected vision.<k> / text.<k>)")
        if not t.is_floating_point():
            raise DataError(f"{path}: {key} must be a float tensor, got {t.dtype}")
        layers[m.group(1)][int(m.group(2))] = t
    k = len(layers["vision"])
    if k == 0:
        raise DataError(f"{path}: no vision.<k> tensors (a model with no image tokens?)")
    for mod in ("vision", "text"):
        if sorted(layers[mod]) != list(range(k)):
            raise DataError(f"{path}: {mod} layers {sorted(layers[mod])} do not match 0..{k - 1}")
    return [layers["vision"][i] for i in range(k)], [layers["text"][i] for i in range(k)]


def run_tokens(args: argparse.Namespace) -> int:
    """Score the token file; print the summary (and baselines); write JSON if asked."""
    settings = read_sections(args)["mir"]
    check_outputs(args, "json", reads=[args.tokens])
    vision, text = load_token_file(args.tokens)
    result = compute_mir(
        vision, text, sqrt=settings.backend, outliers=settings.outliers, median=settings.median,
        settings=settings.record(TOKEN_RUN),
    )  # fmt: skip
    result.metadata.update({"source": "tokens", "tokens": str(args.tokens)})
    if settings.baselines:
        from modalign.metrics import baseline_report

        result.metadata["baselines"] = baseline_report(
            vision, text, max_tokens=settings.baseline_tokens, seed=settings.seed
        )
    if args.json:
        result.to_json(args.json)
    print_summary(result, args.quiet)
    if settings.baselines and not args.quiet:
        print_baselines(result.metadata["baselines"])
    if args.json and not args.quiet:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
