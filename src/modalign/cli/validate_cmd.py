"""`modalign validate`: does MIR (or a baseline, or the caption loss) of pre-trained checkpoints
predict the scores they reached after fine-tuning?

    modalign validate --checkpoints runs.jsonl --out runs/validate          # {"model","score","group"}
    modalign validate --model ckA --score 61.2 --model ckB --score 58.9 --model ckC --score 63.0 \\
                      --images probe/ --texts captions.txt --out runs/validate

Writes OUT/validate.json (every measure of every checkpoint, the correlations with bootstrap
intervals), OUT/validate.md (tables) and OUT/validate.png (score vs each measure). Each
checkpoint's measurements are cached in OUT/cache (or --cache) under a key of model, probe data
and settings: re-running resumes after the last finished checkpoint and reuses every result
whose inputs did not change. Without probe data, the embedded default's probe set is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modalign.cli.probe_options import (
    add_data_arguments,
    add_run_arguments,
    check_run_arguments,
    parse_layers,
    source_from_args,
    use_default_data,
)
from modalign.errors import ConfigError, DataError


def configure(p: argparse.ArgumentParser) -> None:
    """Add the arguments of `modalign validate` to `p`."""
    from modalign.metrics import MEDIAN_MODES, OUTLIER_MODES, SQRT_BACKENDS

    p.description = __doc__.split("\n\n")[0]
    g = p.add_argument_group("checkpoints and scores")
    g.add_argument("--checkpoints", type=Path,
                   help='JSONL, one {"model": DIR_OR_ID, "score": X, "group": G (optional)} '
                   "per line; relative model paths are read from the file's folder")  # fmt: skip
    g.add_argument("--model", action="append", default=[], help="a checkpoint (repeatable)")
    g.add_argument("--score", action="append", type=float, default=[],
                   help="its score after fine-tuning, higher is better (one per --model)")  # fmt: skip
    g.add_argument("--group", action="append", default=[],
                   help="its group, e.g. the benchmark (one per --model, or none)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cache", type=Path, help="measurement cache folder (default: OUT/cache)")
    add_data_arguments(p)
    add_run_arguments(p)
    m = p.add_argument_group("measures")
    m.add_argument("--loss-template", choices=["plain", "chat", "official"], default="plain",
                   help="layout of the caption loss (default plain: BOS + image + caption, "
                   "the pre-training objective)")  # fmt: skip
    m.add_argument("--no-baselines", action="store_true", help="skip MMD/KID/centroid gaps")
    m.add_argument("--no-caption-loss", action="store_true", help="skip caption loss / PPL")
    m.add_argument("--outliers", choices=OUTLIER_MODES, default="drop")
    m.add_argument("--sqrt", choices=SQRT_BACKENDS.names(), default="exact")
    m.add_argument("--median", choices=MEDIAN_MODES, default="exact")
    s = p.add_argument_group("statistics")
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    s.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.set_defaults(func=run)


def _checkpoints(args: argparse.Namespace) -> list:
    from modalign.evidence.checkpoints import checkpoints_from_lists, read_checkpoints

    if args.checkpoints and args.model:
        raise ConfigError("give --checkpoints FILE or --model/--score flags, not both")
    if args.checkpoints:
        return read_checkpoints(args.checkpoints)
    if not args.model:
        raise ConfigError("no checkpoints: give --checkpoints FILE or --model/--score flags")
    return checkpoints_from_lists(args.model, args.score, args.group or None)


def run(args: argparse.Namespace) -> int:
    from modalign.atomic import atomic_write_json, atomic_write_text, check_writable
    from modalign.evidence.report import plot_scatter, render_markdown
    from modalign.evidence.validate import ValidateSettings, usable, validate

    check_run_arguments(args)
    if args.bootstrap < 0 or not 0 < args.level < 1:
        raise ConfigError("--bootstrap must be >= 0 and --level in (0, 1)")
    checkpoints = _checkpoints(args)
    for name in ("validate.json", "validate.md", "validate.png"):
        check_writable(args.out / name, "--out")
    use_default_data(args)
    pairs = source_from_args(args).sample(args.n, args.seed, lazy=True)
    settings = ValidateSettings(
        template=args.template or "chat", loss_template=args.loss_template,
        layers=tuple(parse_layers(args.layers)) if args.layers else None,
        max_text_tokens=args.max_text_tokens, outliers=args.outliers, sqrt=args.sqrt,
        median=args.median, baselines=not args.no_baselines,
        caption_loss=not args.no_caption_loss, dtype=args.dtype, seed=args.seed,
        batch_size=args.batch_size, device=args.device, progress=sys.stderr.isatty(),
    )  # fmt: skip
    report = validate(
        checkpoints, pairs, settings, args.cache or args.out / "cache",
        resamples=args.bootstrap, level=args.level,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    atomic_write_json(args.out / "validate.json", report)
    text = render_markdown(report)
    atomic_write_text(args.out / "validate.md", text)
    if any("measures" in r for r in report["checkpoints"]):
        plot_scatter(report, args.out / "validate.png")
    print(text)
    for path in ("validate.json", "validate.md", "validate.png"):
        if (args.out / path).exists():
            print(f"wrote {args.out / path}", file=sys.stderr)
    if not usable(report):
        raise DataError(
            "no correlation could be computed (see the warnings above); the measurements are "
            f"kept in {args.cache or args.out / 'cache'}"
        )
    return 0
